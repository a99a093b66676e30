"""The haproxy role's preflight checks: run by both deploy tools through
grimbots_infra.preflight.check (roles/platform/README.md, "A role's checks")."""

from __future__ import annotations

from grimbots_infra import derive, guards
from grimbots_infra.preflight import Inputs, vault_password


def check(inputs: Inputs) -> list[str]:
    out = []
    group = inputs["haproxy_backend_group"]
    servers = list(inputs["groups"].get(group, []))
    if not servers:
        out.append(
            inputs.problem("haproxy_backend_group", f"the group '{group}' lists no app node")
        )
    addresses = derive.addresses(servers, inputs["hostvars"], "haproxy_backend_address")
    if len(set(addresses)) != len(addresses):
        out.append(
            inputs.problem(
                "haproxy_backend_group", f"each app node needs its own address: {addresses}"
            )
        )
    recovery = int(inputs["haproxy_recovery_seconds"])
    if not 1 <= recovery <= 30:
        out.append(inputs.problem("haproxy_recovery_seconds", "must be 1 to 30 s"))
    out += vault_password(inputs, "haproxy_stats_password")
    if not bool(inputs["haproxy_tls_selfsigned"]):
        out += guards.certificate(inputs, "haproxy_tls_certificate", "haproxy_tls_key")
    out += guards.members_private(inputs, "HAProxy's backends", servers, "haproxy_backend_address")
    for name in ("haproxy_go_rate_limit", "haproxy_go_rate_period_s", "haproxy_body_limit_bytes"):
        if int(inputs[name]) <= 0:
            out.append(inputs.problem(name, "must be above 0"))
    return out
