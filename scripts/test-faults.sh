#!/usr/bin/env bash
# The fault-injection suite (app/faults): seeded scenarios that run the real funnel while Redis,
# the database, Telegram and workers fail, then check the delivery invariants. Prints scenarios
# run, faults injected by kind and invariants violated (must be 0).
# FAULT_SCENARIOS (default 200), FAULT_SEED, FAULT_LANES, FAULT_KINDS: see docs/app.md, "Proof".
set -euo pipefail
cd "$(dirname "$0")/../app"
../.venv/bin/pytest -p no:cacheprovider -q -s faults "$@"
