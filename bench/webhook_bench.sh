#!/usr/bin/env bash
# Webhook intake benchmark: one Gunicorn node on loopback, measured with wrk.
#
# Serves `grimbots web` (POST /webhook/telegram/<bot_id>: secret check, JSON validation, the
# Redis dedup locks and the RQ enqueue, all for real) and bench/trivial_app.py (a Flask endpoint
# that only reads the body) with the same Gunicorn settings, then hits both with the same wrk
# script in the same run: requests/s, p50/p99 and the ratio webhook / trivial.
# Targets (2-core machine): >= 1,500 req/s, p99 < 20 ms, ratio >= 0.6.
#
# Uses .venv, a temporary SQLite database and Redis DB $BENCH_REDIS_DB (default 5) of the local
# Redis on 127.0.0.1:6379 (`make services`), flushed before and after: nothing else is touched.
# No RQ worker runs: the jobs pile up in that Redis DB and are flushed between phases.
# Everything it starts is stopped on exit. Exit status: 0 targets met, 2 a target missed, 1 error.
#
# Knobs (environment):
#   BENCH_DURATION=15 BENCH_WARMUP=5 BENCH_RUNS=1    seconds measured / warm-up, repetitions
#   BENCH_THREADS=2 BENCH_CONNECTIONS=32             wrk threads and connections
#   BENCH_WORKERS=4 BENCH_WEB_THREADS=4              Gunicorn workers x threads (both servers;
#                                                    defaults: GRIMBOTS_WEB_WORKERS/_THREADS or 4)
#   BENCH_APP_PORT=5055 BENCH_TRIVIAL_PORT=5056 BENCH_REDIS_DB=5
#   BENCH_MULTIPROC=1                                metrics in multiprocess mode, as in production
#   BENCH_PROFILE=0                                  1: py-spy records the app workers (if installed)
#   BENCH_QUIET_WAIT=0 BENCH_QUIET_IDLE=85           wait up to N s for CPU idle >= 85% first
#                                                    (the machine may be shared with test runs)
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
BIN=$ROOT/.venv/bin
DURATION=${BENCH_DURATION:-15}
WARMUP=${BENCH_WARMUP:-5}
RUNS=${BENCH_RUNS:-1}
THREADS=${BENCH_THREADS:-2}
CONNECTIONS=${BENCH_CONNECTIONS:-32}
WORKERS=${BENCH_WORKERS:-${GRIMBOTS_WEB_WORKERS:-4}}
WEB_THREADS=${BENCH_WEB_THREADS:-${GRIMBOTS_WEB_THREADS:-4}}
APP_PORT=${BENCH_APP_PORT:-5055}
TRIVIAL_PORT=${BENCH_TRIVIAL_PORT:-5056}
REDIS_DB=${BENCH_REDIS_DB:-5}
MULTIPROC=${BENCH_MULTIPROC:-1}
PROFILE=${BENCH_PROFILE:-0}
QUIET_WAIT=${BENCH_QUIET_WAIT:-0}
QUIET_IDLE=${BENCH_QUIET_IDLE:-85}
REDIS="redis-cli -h 127.0.0.1 -p 6379 -n $REDIS_DB"

die() { echo "bench: $*" >&2; exit 1; }
for n in DURATION WARMUP RUNS THREADS CONNECTIONS WORKERS WEB_THREADS APP_PORT TRIVIAL_PORT REDIS_DB \
  QUIET_WAIT QUIET_IDLE; do
  [[ ${!n} =~ ^[0-9]+$ ]] || die "$n must be a whole number, got '${!n}'"
done
((RUNS >= 1 && RUNS <= 10)) || die "BENCH_RUNS must be 1..10"
((THREADS >= 1 && THREADS <= 64)) || die "BENCH_THREADS must be 1..64 (the Lua id ranges)"
[[ -x $BIN/grimbots && -x $BIN/gunicorn ]] || die "no .venv with grimbots and gunicorn: make venv"
command -v wrk >/dev/null || die "wrk is missing: make services (Debian package wrk)"
$REDIS ping >/dev/null 2>&1 || die "no Redis on 127.0.0.1:6379: make services"
for port in "$APP_PORT" "$TRIVIAL_PORT"; do
  if curl -s -o /dev/null --max-time 1 "http://127.0.0.1:$port/"; then
    die "port $port is already in use"
  fi
done

WORK=$(mktemp -d /tmp/grimbots-bench.XXXXXX)
PIDS=()
cleanup() {
  local rc=$?
  trap - EXIT INT TERM
  for pid in "${PIDS[@]}"; do kill -TERM "$pid" 2>/dev/null || true; done
  for pid in "${PIDS[@]}"; do
    for _ in $(seq 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
    kill -KILL "$pid" 2>/dev/null || true
    wait "$pid" 2>/dev/null || true
  done
  $REDIS flushdb >/dev/null 2>&1 || true
  if [[ ${BENCH_KEEP:-0} == 1 ]]; then echo "bench: work dir kept: $WORK"; else rm -rf "$WORK"; fi
  exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

export GRIMBOTS_DATABASE_URL="sqlite:///$WORK/bench.db"
export GRIMBOTS_REDIS_URL="redis://127.0.0.1:6379/$REDIS_DB"
export GRIMBOTS_QUEUE_REDIS_URL="redis://127.0.0.1:6379/$REDIS_DB"
export GRIMBOTS_REDIS_MODE=single GRIMBOTS_QUEUE_REDIS_MODE=single
export GRIMBOTS_WEB_BIND="127.0.0.1:$APP_PORT"
export GRIMBOTS_WEB_WORKERS=$WORKERS GRIMBOTS_WEB_THREADS=$WEB_THREADS
export GRIMBOTS_LOG_LEVEL=WARNING
export TELEGRAM_API_BASE="http://127.0.0.1:9"  # never called by the webhook; a closed port
export GRIMBOTS_PUBLIC_URL="http://127.0.0.1:$APP_PORT"
export GRIMBOTS_DEMO_WEBHOOK_SECRET="bench-secret-${RANDOM}${RANDOM}"
if [[ $MULTIPROC == 1 ]]; then
  mkdir -p "$WORK/prom"
  export PROMETHEUS_MULTIPROC_DIR="$WORK/prom"
else
  unset PROMETHEUS_MULTIPROC_DIR
fi

echo "bench: work dir $WORK, Redis DB $REDIS_DB (flushed)"
$REDIS flushdb >/dev/null
"$BIN/grimbots" db upgrade >"$WORK/upgrade.log" 2>&1 || { cat "$WORK/upgrade.log"; die "db upgrade failed"; }
"$BIN/grimbots" seed-demo >"$WORK/seed.json" 2>"$WORK/seed.log" || { cat "$WORK/seed.log"; die "seed-demo failed"; }
read -r BOT_ID SECRET OFFER_ID < <("$BIN/python" -c '
import json, sys
seed = json.load(open(sys.argv[1]))
print(seed["bot_id"], seed["webhook_secret"], (seed.get("offer_ids") or [1])[0])' "$WORK/seed.json")
echo "bench: bot $BOT_ID seeded"

# Same Gunicorn settings as grimbots.gunicorn_app (gthread, keep-alive 5, backlog 2048, no access log).
"$BIN/gunicorn" --chdir "$ROOT/bench" -k gthread -w "$WORKERS" --threads "$WEB_THREADS" \
  --keep-alive 5 --backlog 2048 --timeout 30 --graceful-timeout 25 --log-level warning \
  -b "127.0.0.1:$TRIVIAL_PORT" trivial_app:app >"$WORK/trivial.log" 2>&1 &
PIDS+=($!)
"$BIN/grimbots" web >"$WORK/web.log" 2>&1 &
PIDS+=($!)
APP_PID=$!

wait_http() {  # wait_http URL LOG: until it answers (bounded: 90 s)
  for _ in $(seq 450); do
    curl -s -o /dev/null --max-time 1 "$1" && return 0
    sleep 0.2
  done
  tail -20 "$2" >&2
  die "$1 did not answer within 90 s"
}
wait_http "http://127.0.0.1:$TRIVIAL_PORT/health" "$WORK/trivial.log"
wait_http "http://127.0.0.1:$APP_PORT/health" "$WORK/web.log"

WEBHOOK_URL="http://127.0.0.1:$APP_PORT/webhook/telegram/$BOT_ID"
TRIVIAL_URL="http://127.0.0.1:$TRIVIAL_PORT/webhook/telegram/$BOT_ID"
probe='{"update_id":1,"message":{"message_id":1,"date":0,"chat":{"id":1,"type":"private"},"from":{"id":1,"is_bot":false,"first_name":"Lead"},"text":"probe"}}'
answer=$(curl -s --max-time 5 -w ' HTTP %{http_code}' -H 'Content-Type: application/json' \
  -H "X-Telegram-Bot-Api-Secret-Token: $SECRET" -d "$probe" "$WEBHOOK_URL")
[[ $answer == *"HTTP 200" ]] || { tail -20 "$WORK/web.log" >&2; die "webhook probe failed: $answer"; }

cpu_idle() {  # percent of CPU time idle over the next 3 seconds, from /proc/stat
  local a b
  read -r -a a < <(grep '^cpu ' /proc/stat)
  sleep 3
  read -r -a b < <(grep '^cpu ' /proc/stat)
  local total=0 i
  for i in 1 2 3 4 5 6 7 8; do total=$((total + b[i] - a[i])); done
  echo $((100 * (b[4] + b[5] - a[4] - a[5]) / (total > 0 ? total : 1)))
}
idle=$(cpu_idle)
waited=0
while ((idle < QUIET_IDLE && waited < QUIET_WAIT)); do
  echo "bench: CPU idle ${idle}% < ${QUIET_IDLE}%: waiting for a quieter machine (${waited}/${QUIET_WAIT} s)"
  sleep 12
  waited=$((waited + 15))
  idle=$(cpu_idle)
done
nproc_=$(nproc)
read -r load1 load5 _ </proc/loadavg
if ((idle < QUIET_IDLE)); then
  echo "bench: WARNING: CPU only ${idle}% idle before the run (load average $load1):" \
    "other work competes on this machine, figures will be low"
fi
cpu_model=$(awk -F': ' '/^model name/ {print $2; exit}' /proc/cpuinfo)
"$BIN/python" - "$WORK/meta.json" <<EOF
import json, platform, sys, time
json.dump({
    "started_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    "command": "bash bench/webhook_bench.sh",
    "machine": {"nproc": $nproc_, "cpu_model": """$cpu_model""", "kernel": platform.release(),
                "python": platform.python_version(),
                "loadavg_at_start": [$load1, $load5], "cpu_idle_pct_at_start": $idle},
    "config": {"runs": $RUNS, "duration_s": $DURATION, "warmup_s": $WARMUP,
               "wrk_threads": $THREADS, "connections": $CONNECTIONS, "workers": $WORKERS,
               "threads": $WEB_THREADS, "worker_class": "gthread",
               "metrics_multiprocess": bool($MULTIPROC), "database": "sqlite (temp file)",
               "redis": "127.0.0.1:6379/$REDIS_DB"},
}, open(sys.argv[1], "w"), indent=2)
EOF

queued() { $REDIS llen rq:queue:webhook; }
phase=0
measure() {  # measure NAME URL SECONDS OUT: one wrk run with its own update-id range
  phase=$((phase + 1))
  local offset=$((phase * 1099511627776))  # 2^40 ids per phase
  WRK_REPORT=$4 timeout $(($3 + 60)) wrk -t "$THREADS" -c "$CONNECTIONS" -d "${3}s" --timeout 5s \
    -s "$ROOT/bench/webhook.lua" "$2" -- "$SECRET" "$offset" "$OFFER_ID" >"$WORK/wrk-$phase.log" 2>&1 ||
    { cat "$WORK/wrk-$phase.log" >&2; die "wrk failed on $1"; }
}

profile_start() {
  [[ $PROFILE == 1 ]] || return 0
  local spy
  spy=$(command -v py-spy || echo "$BIN/py-spy")
  [[ -x $spy ]] || { echo "bench: py-spy not installed, no profile"; return 0; }
  local i=0
  mkdir -p "$ROOT/bench/results"
  for child in $(pgrep -P "$APP_PID"); do
    i=$((i + 1))
    timeout $((DURATION + 30)) "$spy" record --nonblocking -p "$child" -d "$DURATION" -r 100 \
      -f raw -o "$ROOT/bench/results/profile-$child.txt" >/dev/null 2>&1 &
    PIDS+=($!)
  done
  echo "bench: profiling $i app workers with py-spy (collapsed stacks in bench/results/)"
}

for run in $(seq "$RUNS"); do
  # Alternate the order so neither server always runs on a warmer machine.
  if ((run % 2)); then order=(trivial webhook); else order=(webhook trivial); fi
  for target in "${order[@]}"; do
    url=$TRIVIAL_URL; [[ $target == webhook ]] && url=$WEBHOOK_URL
    $REDIS flushdb >/dev/null  # drops piled-up jobs; bot meta is cached again by the warm-up
    echo "bench: run $run/$RUNS $target: warm-up ${WARMUP}s"
    measure "$target" "$url" "$WARMUP" ""
    before=$(queued)
    echo "bench: run $run/$RUNS $target: measuring ${DURATION}s"
    [[ $target == webhook && $run == 1 ]] && profile_start
    measure "$target" "$url" "$DURATION" "$WORK/run$run-$target.json"
    if [[ $target == webhook ]]; then echo $(($(queued) - before)) >"$WORK/run$run-enqueued.txt"; fi
  done
done

mkdir -p "$ROOT/bench/results"
report="$ROOT/bench/results/webhook-$(date -u +%Y%m%dT%H%M%SZ).json"
set +e
"$BIN/python" "$ROOT/bench/bench_report.py" "$WORK" "$report"
rc=$?
set -e
if grep -q -i -E 'Traceback|error' "$WORK/web.log"; then
  echo "bench: the app logged errors (first lines):"
  grep -i -E -m 5 'Traceback|error' "$WORK/web.log"
fi
exit "$rc"
