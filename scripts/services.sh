#!/usr/bin/env bash
# Install (from Debian's packages) and start what the tests need on this machine:
# Redis on 127.0.0.1:6379, PostgreSQL 15 on 127.0.0.1:5432, and the Docker engine; promtool
# (Debian's prometheus package: only the tool is used, the daemon is not started).
# Idempotent: each step is skipped when already done. No systemd here, so daemons start directly.
#
# usage: services.sh [base|redis|all]   (default all). `base`: what a minimal Debian 12 image
# lacks before the venv can be made (Python's venv module, curl, git, the ssh client); the
# Makefile runs it before creating .venv. `make run` needs only Redis: `services.sh redis`
# installs and starts nothing else (no PostgreSQL, no Docker).
set -euo pipefail
WHAT=${1:-all}
BASE=(python3-venv curl git openssh-client ca-certificates)
case $WHAT in
  base) PKGS=("${BASE[@]}") ;;
  redis) PKGS=("${BASE[@]}" redis-server) ;;
  all) PKGS=("${BASE[@]}" redis-server postgresql docker.io wrk debootstrap prometheus) ;;
  *) echo "usage: $0 [base|redis|all]" >&2; exit 2 ;;
esac
missing=()
for p in "${PKGS[@]}"; do dpkg -s "$p" >/dev/null 2>&1 || missing+=("$p"); done
if ((${#missing[@]})); then
  echo "installing: ${missing[*]}"
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null
fi
if [[ $WHAT == base ]]; then
  echo "services: base tools ready"
  exit 0
fi

if ! redis-cli -h 127.0.0.1 -p 6379 ping >/dev/null 2>&1; then
  echo "starting redis-server on 127.0.0.1:6379"
  redis-server --bind 127.0.0.1 --port 6379 --daemonize yes --save '' --appendonly no \
    --maxclients 10000 --logfile /tmp/grimbots-redis.log
  for _ in $(seq 50); do redis-cli ping >/dev/null 2>&1 && break; sleep 0.1; done
fi

if [[ $WHAT == redis ]]; then
  echo "services: redis ready"
  exit 0
fi

PGVER=$(ls /usr/lib/postgresql | sort -n | tail -1)
if ! pg_lsclusters -h 2>/dev/null | grep -q online; then
  pg_lsclusters -h | grep -q . || pg_createcluster "$PGVER" main >/dev/null
  echo "starting PostgreSQL $PGVER"
  pg_ctlcluster "$PGVER" main start
fi
for _ in $(seq 100); do pg_isready -q -h 127.0.0.1 && break; sleep 0.2; done
# The test role and database (password auth over TCP, like production).
su postgres -c "psql -qtAc \"SELECT 1 FROM pg_roles WHERE rolname='grimbots'\"" | grep -q 1 ||
  su postgres -c "psql -qc \"CREATE ROLE grimbots LOGIN SUPERUSER PASSWORD 'grimbots'\""
su postgres -c "psql -qtAc \"SELECT 1 FROM pg_database WHERE datname='grimbots_test'\"" | grep -q 1 ||
  su postgres -c "createdb -O grimbots grimbots_test"

if ! docker info >/dev/null 2>&1; then
  echo "starting dockerd"
  (dockerd >/tmp/grimbots-dockerd.log 2>&1 &)
  for _ in $(seq 100); do docker info >/dev/null 2>&1 && break; sleep 0.3; done
  docker info >/dev/null 2>&1 || { echo "dockerd did not start; see /tmp/grimbots-dockerd.log"; exit 1; }
fi
echo "services: redis, postgresql $PGVER, docker ready"
