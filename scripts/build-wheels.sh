#!/usr/bin/env bash
# Build the app wheel and one wheel per entry of app/requirements.lock into dist/wheels, so
# hosts install with `pip install --no-index --find-links` and get exactly the locked versions
# (the set holds no other version to pick). Relock: see docs/app.md, "Locked dependencies".
# Rebuilt only when app sources, pyproject or the lock change (stamp = hash of them).
set -euo pipefail
cd "$(dirname "$0")/.."
out=dist/wheels
lock=app/requirements.lock
stamp=$(find scripts/build-wheels.sh app/pyproject.toml "$lock" app/src -type f -not -name '*.pyc' -print0 | sort -z | xargs -0 sha256sum | sha256sum | cut -c1-16)
if [[ -f $out/.stamp && $(cat $out/.stamp) == "$stamp" ]]; then
  echo "wheels up to date in $out"; exit 0
fi
rm -rf "$out"; mkdir -p "$out"
# The lock carries every dependency (async-timeout too, which the hosts' Python 3.11.2 needs)
# with its hashes: --no-deps keeps the set to it, --require-hashes checks each download.
.venv/bin/pip wheel -q --no-deps --require-hashes --wheel-dir "$out" -r "$lock"
.venv/bin/pip wheel -q --no-deps --wheel-dir "$out" ./app
# The set must be closed: the app and its dependencies install from it alone.
.venv/bin/pip install -q --dry-run --ignore-installed --no-index --find-links "$out" grimbots
echo "$stamp" > $out/.stamp
ls "$out" | wc -l | xargs echo "wheels built in $out:"
