"""Check the alert rules beyond what promtool checks.

Every rule in roles/monitoring/files/alert_rules.yml must have a severity and a runbook_url anchor
that exists in docs/phase4.md, and alert_rules_test.yml must hold, for every rule, a case in
which it fires and one in which it stays silent (Watchdog excepted: it cannot be silent).
Run after `promtool test rules`, which proves the cases themselves.
"""

from __future__ import annotations

import re
import sys
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parent.parent
FILES = ROOT / "roles" / "monitoring" / "files"
SEVERITIES = {"page", "ticket", "none"}
ALWAYS_FIRING = {"Watchdog"}


def doc_anchors(doc: Path) -> set[str]:
    """GitHub-style anchors of the Markdown headings in doc."""
    anchors = set()
    for line in doc.read_text().splitlines():
        if line.startswith("#"):
            title = line.lstrip("#").strip().lower()
            anchors.add(re.sub(r"[^a-z0-9 _-]", "", title).replace(" ", "-"))
    return anchors


def main() -> int:
    rules = [
        r
        for g in yaml.safe_load((FILES / "alert_rules.yml").read_text())["groups"]
        for r in g["rules"]
        if "alert" in r
    ]
    tests = yaml.safe_load((FILES / "alert_rules_test.yml").read_text())["tests"]
    fires: set[str] = set()
    silent: set[str] = set()
    for test in tests:
        for case in test.get("alert_rule_test", []):
            (fires if case.get("exp_alerts") else silent).add(case["alertname"])
    anchors = doc_anchors(ROOT / "docs" / "phase4.md")
    errors = []
    for rule in rules:
        name = rule["alert"]
        severity = rule.get("labels", {}).get("severity")
        if severity not in SEVERITIES:
            errors.append(f"{name}: severity {severity!r} is not one of {sorted(SEVERITIES)}")
        runbook = rule.get("annotations", {}).get("runbook_url", "")
        if not runbook.startswith("docs/phase4.md#"):
            errors.append(f"{name}: runbook_url annotation must be docs/phase4.md#<anchor>")
        elif runbook.split("#", 1)[1] not in anchors:
            errors.append(f"{name}: docs/phase4.md has no heading for #{runbook.split('#', 1)[1]}")
        if name not in fires:
            errors.append(f"{name}: alert_rules_test.yml has no case in which it fires")
        if name not in silent and name not in ALWAYS_FIRING:
            errors.append(f"{name}: alert_rules_test.yml has no case in which it stays silent")
    for error in errors:
        print(error)
    print(f"alert rules: {len(rules)} rules, {len(errors)} problems")
    return 1 if errors else 0


if __name__ == "__main__":
    sys.exit(main())
