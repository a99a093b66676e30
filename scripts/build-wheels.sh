#!/usr/bin/env bash
# Build the app wheel and every dependency wheel into dist/wheels, so hosts install with
# `pip install --no-index --find-links` and never reach a package index.
# Rebuilt only when app sources or pyproject change (stamp = hash of them).
set -euo pipefail
cd "$(dirname "$0")/.."
out=dist/wheels
stamp=$(find scripts/build-wheels.sh app/pyproject.toml app/src -type f -not -name '*.pyc' -print0 | sort -z | xargs -0 sha256sum | sha256sum | cut -c1-16)
if [[ -f $out/.stamp && $(cat $out/.stamp) == "$stamp" ]]; then
  echo "wheels up to date in $out"; exit 0
fi
rm -rf "$out"; mkdir -p "$out"
# The hosts run Debian's Python 3.11.2, where redis-py also needs async-timeout (< 3.11.3);
# the controller's newer 3.11 would leave it out of the set.
.venv/bin/pip wheel -q --wheel-dir "$out" ./app 'async-timeout>=4.0.3'
echo "$stamp" > $out/.stamp
ls "$out" | wc -l | xargs echo "wheels built in $out:"
