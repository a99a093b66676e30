#!/usr/bin/env bash
# molecule test -s patroni alone (three db containers: converge, idempotence, verify), timed.
# scripts/test-molecule.sh runs it too, with every other scenario.
set -euo pipefail
cd "$(dirname "$0")/.."
MOLECULE_SCENARIOS=patroni exec bash scripts/test-molecule.sh
