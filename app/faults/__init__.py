"""Fault-injection suite: seeded scenarios that run the real funnel under faults.

Each scenario drives webhook intake (Flask test client), RQ jobs (the app's own worker code, in
process or as a real subprocess), real Redis, real PostgreSQL or SQLite and the fake Telegram
Bot API, injects faults at generated points, recovers (faults cleared, non-2xx answers
redelivered like Telegram and the gateway do, retries and reconcilers run to quiescence) and
then checks the delivery invariants against what the fake Telegram recorded and the database.

Run from app/: ``../.venv/bin/pytest -p no:cacheprovider faults`` (FAULT_SCENARIOS, FAULT_SEED,
FAULT_LANES, FAULT_KINDS) or ``../.venv/bin/python -m faults.runner --help``.
"""
