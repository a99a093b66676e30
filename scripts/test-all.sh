#!/usr/bin/env bash
# Everything CI runs, as timed stages; stops at the first failing stage and prints a summary.
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/lib.sh
: > "$STAGE_LOG"
trap 'echo; echo "=== stage times ==="; cat "$STAGE_LOG"' EXIT
stage lint bash scripts/lint.sh
stage app-tests bash scripts/test-app.sh
stage app-faults bash scripts/test-faults.sh
stage molecule bash scripts/test-molecule.sh
stage lab-ansible bash scripts/test-lab.sh ansible
stage lab-pyinfra bash scripts/test-lab.sh pyinfra
