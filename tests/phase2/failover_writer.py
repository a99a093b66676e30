"""Commit numbered rows through the app's database URL until told to stop; print every outcome.

Runs on an app host with the app's virtualenv (the same grimbots.db.Database the app uses, so the
same multi-host URL, retry and timeouts), started over SSH by test_failover.py:

    <platform_app_home>/venv/bin/python failover_writer.py --env <config dir>/database.env --run RUN

Each line on stdout is JSON: {"ok": n, "t": unix time} once row n is acknowledged (committed on
the primary and its synchronous standby), {"err": "...", "t": ...} when a commit failed (row n is
then tried again; ON CONFLICT makes a retry of a commit whose acknowledgement was lost harmless).
It stops when its stdin closes or after --max-seconds. --verify prints the committed numbers.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import threading
import time

from sqlalchemy import text

from grimbots.db import Database

SCHEMA = "lab_failover"


def load_env(path: str) -> None:
    """KEY=VALUE lines of a systemd environment file into os.environ (PGPASSWORD included)."""
    with open(path) as fd:
        for line in fd:
            line = line.strip()
            if line and not line.startswith("#") and "=" in line:
                key, value = line.split("=", 1)
                os.environ[key] = value


def emit(**fields) -> None:
    print(json.dumps({**fields, "t": time.time()}), flush=True)


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--env", required=True)
    parser.add_argument("--run", required=True)
    parser.add_argument("--max-seconds", type=float, default=240)
    parser.add_argument("--interval", type=float, default=0.02)
    parser.add_argument("--verify", action="store_true")
    args = parser.parse_args()
    load_env(args.env)
    db = Database(os.environ["GRIMBOTS_DATABASE_URL"], pool_size=2, max_overflow=0)

    def setup(session):
        session.execute(text(f"CREATE SCHEMA IF NOT EXISTS {SCHEMA}"))
        session.execute(
            text(
                f"CREATE TABLE IF NOT EXISTS {SCHEMA}.probe (run text, n integer, "
                "at timestamptz DEFAULT now(), PRIMARY KEY (run, n))"
            )
        )

    db.transaction(setup)
    if args.verify:
        rows = db.transaction(
            lambda s: [
                r[0]
                for r in s.execute(
                    text(f"SELECT n FROM {SCHEMA}.probe WHERE run = :run ORDER BY n"),
                    {"run": args.run},
                )
            ]
        )
        print(json.dumps({"committed": rows}))
        return 0

    stop = threading.Event()
    threading.Thread(target=lambda: (sys.stdin.read(), stop.set()), daemon=True).start()
    deadline = time.monotonic() + args.max_seconds
    n = 1
    emit(started=args.run)
    while not stop.is_set() and time.monotonic() < deadline:
        try:
            db.transaction(
                lambda s, n=n: s.execute(
                    text(
                        f"INSERT INTO {SCHEMA}.probe (run, n) VALUES (:run, :n) "
                        "ON CONFLICT DO NOTHING"
                    ),
                    {"run": args.run, "n": n},
                )
            )
        except Exception as exc:  # noqa: BLE001 - every failure is reported and retried
            emit(err=f"{type(exc).__name__}: {str(exc).splitlines()[0][:200]}", n=n)
            time.sleep(0.1)
            continue
        emit(ok=n)
        n += 1
        time.sleep(args.interval)
    emit(stopped=n - 1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
