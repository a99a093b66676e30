#!/usr/bin/env bash
# App unit + integration tests against the real Redis and PostgreSQL that scripts/services.sh
# started, on SQLite and PostgreSQL; plus the fake Telegram API's own tests.
set -euo pipefail
cd "$(dirname "$0")/.."
.venv/bin/pytest -q tools/fake_telegram lab
cd app && ../.venv/bin/pytest -p no:cacheprovider "$@"
