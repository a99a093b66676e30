#!/usr/bin/env bash
# Run the app on this machine the phase-1 way: SQLite + the local Redis, Gunicorn on :5000 and
# one worker per queue lane (tasks, gateway, webhook). Ctrl-C stops everything.
set -euo pipefail
cd "$(dirname "$0")/.."
mkdir -p var
export GRIMBOTS_DATABASE_URL=${GRIMBOTS_DATABASE_URL:-sqlite:///$PWD/var/grimbots.db}
export GRIMBOTS_REDIS_URL=${GRIMBOTS_REDIS_URL:-redis://127.0.0.1:6379/0}
export GRIMBOTS_GATEWAY_SECRETS=${GRIMBOTS_GATEWAY_SECRETS:-sandbox:local-sandbox-secret}
export GRIMBOTS_WEB_BIND=${GRIMBOTS_WEB_BIND:-127.0.0.1:5000}
# No real Telegram from a dev machine by default: point at a local fake API.
export TELEGRAM_API_BASE=${TELEGRAM_API_BASE:-http://127.0.0.1:8081}
BIN=.venv/bin
$BIN/grimbots db upgrade
$BIN/grimbots seed-demo
pids=()
trap 'kill "${pids[@]}" 2>/dev/null; wait' EXIT INT TERM
if [[ $TELEGRAM_API_BASE == http://127.0.0.1:8081 ]]; then
  $BIN/python tools/fake_telegram/fake_telegram.py --host 127.0.0.1 --port 8081 & pids+=($!)
fi
for queue in tasks gateway webhook; do $BIN/grimbots worker "$queue" & pids+=($!); done
$BIN/grimbots web & pids+=($!)
echo "grimbots: http://$GRIMBOTS_WEB_BIND/health  (Ctrl-C stops)"
wait -n
