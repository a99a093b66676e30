#!/usr/bin/env bash
# Run the app on this machine the phase-1 way, without Docker or PostgreSQL: SQLite, a local
# Redis, Gunicorn, one RQ worker per lane (tasks, gateway, webhook) and the fake Telegram Bot API
# that records what the bots send. Ctrl-C stops everything.
#
# Ports and places (environment):
#   GRIMBOTS_RUN_PORT=5000            the web app (Gunicorn), on 127.0.0.1
#   GRIMBOTS_RUN_TELEGRAM_PORT=8081   the fake Telegram Bot API, on 127.0.0.1
#   GRIMBOTS_REDIS_URL=redis://127.0.0.1:6379/0
#   GRIMBOTS_RUN_DIR=var              SQLite file and the metric files of this run
# Any other GRIMBOTS_* variable (docs/contracts.md) is passed through.
set -euo pipefail
cd "$(dirname "$0")/.."
BIN=$PWD/.venv/bin
PORT=${GRIMBOTS_RUN_PORT:-5000}
TG_PORT=${GRIMBOTS_RUN_TELEGRAM_PORT:-8081}
VAR=${GRIMBOTS_RUN_DIR:-$PWD/var}
mkdir -p "$VAR"
export GRIMBOTS_DATABASE_URL=${GRIMBOTS_DATABASE_URL:-sqlite:///$VAR/grimbots.db}
export GRIMBOTS_REDIS_URL=${GRIMBOTS_REDIS_URL:-redis://127.0.0.1:6379/0}
export GRIMBOTS_GATEWAY_SECRETS=${GRIMBOTS_GATEWAY_SECRETS:-sandbox:local-sandbox-secret}
export GRIMBOTS_WEB_BIND=${GRIMBOTS_WEB_BIND:-127.0.0.1:$PORT}
export GRIMBOTS_PUBLIC_URL=${GRIMBOTS_PUBLIC_URL:-http://$GRIMBOTS_WEB_BIND}
# No real Telegram from a dev machine by default: the bots talk to the local fake API.
export TELEGRAM_API_BASE=${TELEGRAM_API_BASE:-http://127.0.0.1:$TG_PORT}
# /metrics sums every Gunicorn worker and RQ worker of this run (prometheus-client's
# multiprocess mode, as on the hosts); the files of an earlier run are dropped.
export PROMETHEUS_MULTIPROC_DIR=$VAR/prometheus
rm -rf "$PROMETHEUS_MULTIPROC_DIR" && mkdir -p "$PROMETHEUS_MULTIPROC_DIR"

[[ -x $BIN/grimbots ]] || { echo "run: no .venv: make venv" >&2; exit 1; }
if ! "$BIN/python" -c 'import redis, sys; redis.Redis.from_url(sys.argv[1]).ping()' \
  "$GRIMBOTS_REDIS_URL" 2>/dev/null; then
  echo "run: no Redis at $GRIMBOTS_REDIS_URL (start one: bash scripts/services.sh redis)" >&2
  exit 1
fi
for port in "$PORT" "$TG_PORT"; do
  if (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; then
    echo "run: port $port is in use (set GRIMBOTS_RUN_PORT / GRIMBOTS_RUN_TELEGRAM_PORT)" >&2
    exit 1
  fi
done

"$BIN/grimbots" db upgrade
seed=$("$BIN/grimbots" seed-demo)
read -r BOT_ID SECRET API_TOKEN < <("$BIN/python" -c '
import json, sys
seed = json.loads(sys.argv[1])
print(seed["bot_id"], seed["webhook_secret"], seed.get("api_token") or "(unchanged)")' "$seed")

pids=()
stop() {
  trap - EXIT INT TERM
  for pid in "${pids[@]}"; do kill -TERM "$pid" 2>/dev/null || true; done
  wait 2>/dev/null || true
}
trap stop EXIT
trap 'exit 130' INT TERM
if [[ $TELEGRAM_API_BASE == "http://127.0.0.1:$TG_PORT" ]]; then
  "$BIN/python" tools/fake_telegram/fake_telegram.py --host 127.0.0.1 --port "$TG_PORT" --allow-http-webhooks &
  pids+=($!)
fi
for queue in tasks gateway webhook; do
  "$BIN/grimbots" worker "$queue" &
  pids+=($!)
done
"$BIN/grimbots" web &
pids+=($!)

for _ in $(seq 150); do  # until the web answers (bounded: 30 s)
  curl -s -o /dev/null --max-time 1 "http://$GRIMBOTS_WEB_BIND/health" && break
  sleep 0.2
done
cat <<EOF

grimbots is running (Ctrl-C stops everything):
  web            http://$GRIMBOTS_WEB_BIND  (/health, /metrics, /openapi.json)
  fake Telegram  $TELEGRAM_API_BASE  (what the bots sent: $TELEGRAM_API_BASE/_calls)
  demo bot       id $BOT_ID, webhook secret $SECRET
  admin API      Authorization: Bearer $API_TOKEN  (docs/api.md)

Send a /start as Telegram would, then see the bot's answer (README.md, "Try it"):
  curl -s http://$GRIMBOTS_WEB_BIND/webhook/telegram/$BOT_ID \\
    -H 'Content-Type: application/json' -H 'X-Telegram-Bot-Api-Secret-Token: $SECRET' \\
    -d '{"update_id": 1, "message": {"message_id": 1, "date": 0, "chat": {"id": 42, "type": "private"}, "from": {"id": 42, "is_bot": false, "first_name": "Ana"}, "text": "/start"}}'
  curl -s '$TELEGRAM_API_BASE/_calls?chat_id=42'

EOF
wait -n
