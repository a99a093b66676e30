"""The monitoring role's preflight checks: run by both deploy tools through
grimbots_infra.preflight.check (roles/platform/README.md, "A role's checks")."""

from __future__ import annotations

import re
from pathlib import Path

from grimbots_infra import guards
from grimbots_infra.preflight import Inputs, vault_password

RULES = Path(__file__).resolve().parent / "files" / "alert_rules.yml"
DURATION = re.compile(r"^([0-9]+(ms|s|m|h|d|w|y))+$")
SIZE = re.compile(r"^[0-9]+(B|KB|MB|GB|TB|PB|EB)$")
TELEGRAM_TOKEN = re.compile(r"^[0-9]+:[A-Za-z0-9_-]+$")


def rule_jobs() -> set[str]:
    """The scrape jobs the alert rules select (``job="..."``)."""
    return set(re.findall(r'job="([a-z_]+)"', RULES.read_text()))


def check(inputs: Inputs) -> list[str]:
    out = []
    if not inputs["groups"].get(inputs["monitoring_group"]):
        out.append(inputs.problem("monitoring_group", "the group lists no monitoring host"))
    out += vault_password(inputs, "monitoring_web_password")
    if guards.placeholder(inputs, "monitoring_telegram_bot_token"):
        out += guards.placeholder(inputs, "monitoring_telegram_bot_token")
    elif not TELEGRAM_TOKEN.match(str(inputs.get("monitoring_telegram_bot_token", ""))):
        out.append(
            inputs.problem(
                "monitoring_telegram_bot_token", "needs a bot token <id>:<secret> (vault)"
            )
        )
    out += guards.chat_id(inputs, "monitoring_telegram_chat_id")
    for key in ("monitoring_retention_time", "monitoring_scrape_interval"):
        if not DURATION.match(str(inputs.get(key, ""))):
            out.append(inputs.problem(key, "must be a Prometheus duration such as 15s or 15d"))
    if not SIZE.match(str(inputs.get("monitoring_retention_size", ""))):
        out.append(inputs.problem("monitoring_retention_size", "must be a size such as 8GB"))
    # blackbox: prometheus.yml.j2 probes each front door (platform_front_door) besides these.
    jobs = {str(j.get("name")) for j in inputs.get("monitoring_scrape_jobs", [])} | {"blackbox"}
    missing = sorted(rule_jobs() - jobs)
    if missing:
        out.append(
            inputs.problem(
                "monitoring_scrape_jobs",
                f"the alert rules select job(s) {', '.join(missing)} that no entry scrapes",
            )
        )
    if inputs.get("monitoring_email_to") and not inputs.get("monitoring_email_smarthost"):
        out.append(inputs.problem("monitoring_email_smarthost", "e-mail alerts need an SMTP relay"))
    out += guards.secrets(inputs, ["monitoring_email_auth_password", "monitoring_haproxy_password"])
    if bool(inputs.get("monitoring_grafana_enabled", False)):
        out += vault_password(inputs, "monitoring_grafana_admin_password")
    out += guards.own_private(inputs, "monitoring_address")
    groups = inputs["groups"]
    targets = [h for g in inputs.get("monitoring_exporter_groups", []) for h in groups.get(g, [])]
    return out + guards.members_private(
        inputs, "Prometheus' targets", dict.fromkeys(targets), "monitoring_target_address"
    )
