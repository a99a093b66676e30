"""Helpers for the phase-2 lab suites and scripts: SSH commands, Patroni's REST API, SQL through
the app host's virtualenv. Every call goes to the lab's containers only, with bounded timeouts.
"""

from __future__ import annotations

import json
import shlex
import subprocess
import sys
import time
import urllib.request
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "deploy"))

import ansible_vars  # noqa: E402

LAB_INVENTORY = ROOT / "inventory" / "lab"
ROLES = ["common", "app", "patroni", "app_database"]
SNAPSHOT = ROOT / "lab" / ".state" / "phase1-snapshot.json"
HERE = Path(__file__).resolve().parent
# The app's PostgreSQL settings staged by the app_database role (same content as database.env).
PG_ENV = "/etc/grimbots/postgresql.env"
APP_PYTHON = "/opt/grimbots/venv/bin/python"


def load_lab() -> ansible_vars.Inventory:
    return ansible_vars.load(LAB_INVENTORY, ROLES)


def ssh(
    v: dict[str, Any], command: str, stdin: str | None = None, timeout: float = 120
) -> subprocess.CompletedProcess:
    """Run a command on a lab host as root (the lab's key); never raises on a non-zero exit."""
    return subprocess.run(
        [
            "ssh",
            "-i",
            str(ROOT / v["ansible_ssh_private_key_file"]),
            "-o",
            "BatchMode=yes",
            "-o",
            "StrictHostKeyChecking=no",
            "-o",
            "UserKnownHostsFile=/dev/null",
            "-o",
            "LogLevel=ERROR",
            "-o",
            "ConnectTimeout=5",
            f"root@{v['ansible_host']}",
            command,
        ],
        input=stdin,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def rest(address: str, path: str, port: int = 8008, timeout: float = 3) -> Any:
    """GET a Patroni REST endpoint (JSON); None when the member does not answer."""
    try:
        with urllib.request.urlopen(f"http://{address}:{port}{path}", timeout=timeout) as resp:  # noqa: S310
            return json.loads(resp.read())
    except (OSError, ValueError):
        return None


def cluster(lab: ansible_vars.Inventory, skip: set[str] | None = None) -> dict | None:
    """/cluster as seen by the first db member that answers."""
    for name in lab.groups["db"]:
        if skip and name in skip:
            continue
        state = rest(lab.hosts[name]["ansible_host"], "/cluster")
        if state:
            return state
    return None


def leaders(state: dict | None) -> list[str]:
    return [m["name"] for m in (state or {}).get("members", []) if m["role"] == "leader"]


def wait_for(check, timeout: float, interval: float = 1.0):
    deadline = time.monotonic() + timeout
    value = check()
    while not value and time.monotonic() < deadline:
        time.sleep(interval)
        value = check()
    return value


_PG_QUERY = """
import json, os, sys
for line in open(sys.argv[1]):
    line = line.strip()
    if line and not line.startswith("#") and "=" in line:
        k, v = line.split("=", 1)
        os.environ[k] = v
from sqlalchemy import text
from grimbots.db import Database
db = Database(os.environ["GRIMBOTS_DATABASE_URL"], pool_size=1, max_overflow=0)
rows = db.transaction(lambda s: [list(r) for r in s.execute(text(sys.argv[2])).all()])
print(json.dumps(rows, default=str))
"""


def pg_rows(app: dict[str, Any], sql: str) -> list[list]:
    """Rows of a query on the primary, through the app host's URL and password (PGPASSWORD)."""
    run = ssh(app, f"{APP_PYTHON} - {PG_ENV} {shlex.quote(sql)}", stdin=_PG_QUERY)
    assert run.returncode == 0, run.stderr[-2000:]
    return json.loads(run.stdout.strip().splitlines()[-1])
