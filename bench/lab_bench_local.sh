#!/usr/bin/env bash
# bench/lab_bench.py end to end on loopback, without the lab: a throwaway HAProxy (TLS with a
# CA made here, the same https frontend and backend settings as roles/haproxy, plus the trivial
# answer on /_lb/ping) in front of three `grimbots web` nodes, all on 127.0.0.1.
#
# For checking the benchmark itself, not for figures of record: HAProxy, three app nodes, Redis
# and the generator share this machine's cores. Needs the Debian package haproxy, openssl,
# .venv and the local Redis (`make services`); uses Redis DB $BENCH_REDIS_DB (default 6),
# flushed before and after, a temporary SQLite database, and stops everything it started.
# Any argument is passed to lab_bench.py (e.g. --rate 500 --duration 10).
#
# Knobs (environment): BENCH_LB_PORT=8443 BENCH_APP_PORTS="5061 5062 5063" BENCH_REDIS_DB=6
#   BENCH_WORKERS=2 BENCH_WEB_THREADS=4 (each node; three nodes share the 2 cores here)
#   BENCH_SERVER_CLOSE=1  HAProxy closes its connection to a node after each answer (diagnosis:
#                         no kept-alive server connections; the role keeps them)
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
BIN=$ROOT/.venv/bin
LB_PORT=${BENCH_LB_PORT:-8443}
read -r -a APP_PORTS <<<"${BENCH_APP_PORTS:-5061 5062 5063}"
REDIS_DB=${BENCH_REDIS_DB:-6}
WORKERS=${BENCH_WORKERS:-2}
WEB_THREADS=${BENCH_WEB_THREADS:-4}
REDIS="redis-cli -h 127.0.0.1 -p 6379 -n $REDIS_DB"

die() { echo "lab_bench_local: $*" >&2; exit 1; }
command -v haproxy >/dev/null || die "haproxy is missing: apt-get install haproxy"
command -v openssl >/dev/null || die "openssl is missing"
[[ -x $BIN/grimbots ]] || die "no .venv: make venv"
$REDIS ping >/dev/null 2>&1 || die "no Redis on 127.0.0.1:6379: make services"
for port in "$LB_PORT" "${APP_PORTS[@]}"; do
  if (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; then die "port $port is in use"; fi
done

WORK=$(mktemp -d /tmp/grimbots-labbench-local.XXXXXX)
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
  if [[ ${BENCH_KEEP:-0} == 1 ]]; then echo "lab_bench_local: kept $WORK"; else rm -rf "$WORK"; fi
  exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# A CA and a server certificate for 127.0.0.1 signed by it (the role makes the lab's the same way).
openssl req -x509 -newkey rsa:2048 -nodes -days 1 -subj "/CN=bench CA" \
  -keyout "$WORK/ca.key" -out "$WORK/ca.crt" 2>/dev/null
openssl req -newkey rsa:2048 -nodes -subj "/CN=127.0.0.1" \
  -keyout "$WORK/site.key" -out "$WORK/site.csr" 2>/dev/null
printf 'subjectAltName=IP:127.0.0.1\n' >"$WORK/san.ext"
openssl x509 -req -in "$WORK/site.csr" -CA "$WORK/ca.crt" -CAkey "$WORK/ca.key" -CAcreateserial \
  -days 1 -extfile "$WORK/san.ext" -out "$WORK/site.crt" 2>/dev/null
cat "$WORK/site.crt" "$WORK/site.key" >"$WORK/site.pem"

servers=""
for i in "${!APP_PORTS[@]}"; do
  servers+="    server app$((i + 1)) 127.0.0.1:${APP_PORTS[$i]}"$'\n'
done
cat >"$WORK/haproxy.cfg" <<EOF
global
    maxconn 4096
    ssl-default-bind-options ssl-min-ver TLSv1.2 no-tls-tickets
defaults
    mode http
    option http-keep-alive
    timeout connect 2000ms
    timeout client 30s
    timeout server 30s
    timeout http-request 10s
    timeout http-keep-alive 30s
    timeout check 2000ms
frontend https
    bind 127.0.0.1:$LB_PORT ssl crt $WORK/site.pem alpn h2,http/1.1
    option forwardfor
    http-request set-header X-Forwarded-Proto https
    # The trivial answer lab_bench.py measures (the lines proposed for roles/haproxy).
    http-request return status 200 content-type text/plain string ok if { path /_lb/ping }
    http-request deny deny_status 413 if { req.hdr_val(content-length) gt 1048576 }
    default_backend app
backend app
    balance roundrobin
    # TCP checks: no RQ worker runs here, so /health answers 503 (it counts workers per queue).
    option http-buffer-request
$([[ ${BENCH_SERVER_CLOSE:-0} == 1 ]] && echo "    option http-server-close")
    retries 2
    option redispatch 1
    retry-on conn-failure empty-response response-timeout
    http-request disable-l7-retry unless METH_GET
    default-server check inter 2s fall 3 rise 2
$servers
EOF
haproxy -c -q -f "$WORK/haproxy.cfg" || die "haproxy rejected $WORK/haproxy.cfg"

export GRIMBOTS_DATABASE_URL="sqlite:///$WORK/bench.db"
export GRIMBOTS_REDIS_URL="redis://127.0.0.1:6379/$REDIS_DB"
export GRIMBOTS_QUEUE_REDIS_URL="redis://127.0.0.1:6379/$REDIS_DB"
export GRIMBOTS_REDIS_MODE=single GRIMBOTS_QUEUE_REDIS_MODE=single
export GRIMBOTS_WEB_WORKERS=$WORKERS GRIMBOTS_WEB_THREADS=$WEB_THREADS
export GRIMBOTS_LOG_LEVEL=WARNING
export TELEGRAM_API_BASE="http://127.0.0.1:9"  # never called by the webhook; a closed port
export GRIMBOTS_PUBLIC_URL="https://127.0.0.1:$LB_PORT"
GRIMBOTS_DEMO_WEBHOOK_SECRET="bench-secret-${RANDOM}${RANDOM}"
export GRIMBOTS_DEMO_WEBHOOK_SECRET
unset PROMETHEUS_MULTIPROC_DIR

$REDIS flushdb >/dev/null
"$BIN/grimbots" db upgrade >"$WORK/upgrade.log" 2>&1 || { cat "$WORK/upgrade.log"; die "db upgrade failed"; }
"$BIN/grimbots" seed-demo >"$WORK/seed.json" 2>"$WORK/seed.log" || { cat "$WORK/seed.log"; die "seed-demo failed"; }
read -r BOT_ID SECRET OFFER_ID < <("$BIN/python" -c '
import json, sys
seed = json.load(open(sys.argv[1]))
print(seed["bot_id"], seed["webhook_secret"], (seed.get("offer_ids") or [1])[0])' "$WORK/seed.json")

for port in "${APP_PORTS[@]}"; do
  mkdir -p "$WORK/prom-$port"
  GRIMBOTS_WEB_BIND="127.0.0.1:$port" PROMETHEUS_MULTIPROC_DIR="$WORK/prom-$port" \
    "$BIN/grimbots" web >"$WORK/web-$port.log" 2>&1 &
  PIDS+=($!)
done
haproxy -db -f "$WORK/haproxy.cfg" >"$WORK/haproxy.log" 2>&1 &
PIDS+=($!)

for port in "${APP_PORTS[@]}"; do  # bounded: 90 s a node
  for _ in $(seq 450); do
    curl -s -o /dev/null --max-time 1 "http://127.0.0.1:$port/health" && continue 2
    sleep 0.2
  done
  tail -20 "$WORK/web-$port.log" >&2
  die "app node on $port did not answer within 90 s"
done
sleep 1  # HAProxy's first checks

echo "lab_bench_local: HAProxy 127.0.0.1:$LB_PORT -> nodes ${APP_PORTS[*]}, bot $BOT_ID"
set +e
GRIMBOTS_BENCH_SECRET=$SECRET "$BIN/python" "$ROOT/bench/lab_bench.py" \
  --lb "127.0.0.1:$LB_PORT" --direct "127.0.0.1:${APP_PORTS[0]}" --ca-file "$WORK/ca.crt" \
  --bot-id "$BOT_ID" --offer-id "$OFFER_ID" "$@"
rc=$?
set -e
if grep -q -i -E 'Traceback' "$WORK"/web-*.log; then
  echo "lab_bench_local: an app node logged a traceback (first lines):"
  grep -h -i -E -m 5 'Traceback|Error' "$WORK"/web-*.log
fi
exit "$rc"
