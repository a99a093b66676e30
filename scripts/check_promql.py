"""Evaluate every alert-rule and dashboard expression against a real Prometheus.

    python scripts/check_promql.py                        # a throwaway Prometheus on loopback
    python scripts/check_promql.py --url http://HOST:9090 --require-data   # the lab's, phase 4
        --user monitoring (password from $GRIMBOTS_PROMETHEUS_PASSWORD): the role's basic auth

Without --url it starts Debian's `prometheus` on 127.0.0.1 with an empty configuration, so the
check proves that every expression parses and evaluates (promtool checks rules, not dashboard
queries). With --require-data every expression must also return at least one series.

tests/phase4/test_dashboards.py loads this file for `dashboard_expressions()` and `evaluate()`,
so the lint and the lab test read the same queries the same way.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import requests
import yaml

ROOT = Path(__file__).resolve().parent.parent
FILES = ROOT / "roles" / "monitoring" / "files"
START_TIMEOUT = 30.0
# What Grafana's $__rate_interval becomes here: any range works for parsing and evaluation.
RATE_INTERVAL = "5m"


class Unauthorized(Exception):
    """Prometheus answered 401: no or wrong basic-auth credentials."""


def rule_expressions() -> list[tuple[str, str]]:
    """(where, expression) for every alerting and recording rule."""
    found = []
    for group in yaml.safe_load((FILES / "alert_rules.yml").read_text())["groups"]:
        for rule in group["rules"]:
            found.append((f"rule {rule.get('alert') or rule.get('record')}", rule["expr"]))
    return found


def dashboard_expressions() -> list[tuple[str, str]]:
    """(where, expression) for every dashboard query, $__rate_interval replaced."""
    found = []
    for path in sorted((FILES / "dashboards").glob("*.json")):
        for panel in json.loads(path.read_text()).get("panels", []):
            for target in panel.get("targets", []):
                if "expr" in target:
                    where = f"dashboard {path.stem} / {panel.get('title')}"
                    expr = target["expr"].replace("$__rate_interval", RATE_INTERVAL)
                    found.append((where, expr))
    return found


def expressions() -> list[tuple[str, str]]:
    """(where, expression) for every rule and every dashboard query."""
    return rule_expressions() + dashboard_expressions()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def evaluate(base: str, expr: str, auth: tuple[str, str] | None) -> tuple[bool, str, int]:
    """(ok, error, series returned) for an instant query; Unauthorized on a 401."""
    answer = requests.get(f"{base}/api/v1/query", params={"query": expr}, auth=auth, timeout=10)
    if answer.status_code == 401:
        raise Unauthorized(f"{base} answered 401")
    body = answer.json()
    if body.get("status") != "success":
        return False, f"{body.get('errorType')}: {body.get('error')}", 0
    result = body["data"]["result"]
    return True, "", len(result) if isinstance(result, list) else 1


def start_local(workdir: Path) -> tuple[subprocess.Popen, str]:
    binary = shutil.which("prometheus")
    if not binary:
        sys.exit("prometheus is not installed: run make services (Debian's prometheus package)")
    config = workdir / "prometheus.yml"
    config.write_text("global: {}\n")
    port = free_port()
    proc = subprocess.Popen(
        [
            binary,
            f"--config.file={config}",
            f"--storage.tsdb.path={workdir / 'data'}",
            f"--web.listen-address=127.0.0.1:{port}",
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    base = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + START_TIMEOUT
    while time.monotonic() < deadline:
        try:
            if requests.get(f"{base}/-/ready", timeout=1).ok:
                return proc, base
        except requests.RequestException:
            pass
        time.sleep(0.2)
    proc.kill()
    sys.exit(f"prometheus did not become ready on {base} within {START_TIMEOUT:.0f} s")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--url", help="an existing Prometheus (default: start one on loopback)")
    parser.add_argument("--user", help="basic-auth user for --url")
    parser.add_argument(
        "--password",
        default=os.environ.get("GRIMBOTS_PROMETHEUS_PASSWORD"),
        help="basic-auth password for --url (default: $GRIMBOTS_PROMETHEUS_PASSWORD, which keeps "
        "it off the command line)",
    )
    parser.add_argument("--require-data", action="store_true", help="every query returns series")
    args = parser.parse_args()
    exprs = expressions()
    auth = (args.user, args.password or "") if args.user else None
    with tempfile.TemporaryDirectory() as tmp:
        proc = None
        base = args.url
        if not base:
            proc, base = start_local(Path(tmp))
        try:
            problems = []
            for where, expr in exprs:
                try:
                    ok, error, count = evaluate(base.rstrip("/"), expr, auth)
                except Unauthorized as exc:
                    sys.exit(f"{exc}: give --user and GRIMBOTS_PROMETHEUS_PASSWORD")
                if not ok:
                    problems.append(f"{where}: {error}\n    {expr}")
                elif args.require_data and count == 0:
                    problems.append(f"{where}: no series\n    {expr}")
        finally:
            if proc:
                proc.terminate()
                proc.wait(timeout=10)
    for problem in problems:
        print(problem)
    print(f"promql: {len(exprs)} expressions evaluated at {base}, {len(problems)} problems")
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
