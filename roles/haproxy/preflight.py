"""The haproxy role's preflight checks: run by both deploy tools through
grimbots_infra.preflight.check (roles/platform/README.md, "A role's checks"). The role is the
front door wherever the inventory puts it (platform_front_door: the first app host in phases
1-2, the lb hosts from phase 3), with certificates from an ACME CA (docs/https.md)."""

from __future__ import annotations

import ipaddress
import re
from typing import Any

from ansible.module_utils.parsing.convert_bool import boolean

from grimbots_infra import derive, guards
from grimbots_infra.preflight import Inputs, vault_password


def check(inputs: Inputs) -> list[str]:
    out = haproxy_acme(inputs)
    if boolean(inputs.get("haproxy_backend_local", False), strict=False):
        servers: list[str] = []  # the front door on the app host: Gunicorn on its loopback
    else:
        servers = _servers(inputs, out)
    recovery = int(inputs["haproxy_recovery_seconds"])
    if not 1 <= recovery <= 30:
        out.append(inputs.problem("haproxy_recovery_seconds", "must be 1 to 30 s"))
    out += vault_password(inputs, "haproxy_stats_password")
    acme_only = boolean(inputs.get("haproxy_acme", False), strict=False) and not inputs.get(
        "haproxy_tls_certificate"
    )
    if not boolean(inputs["haproxy_tls_selfsigned"], strict=False) and not acme_only:
        out += guards.certificate(inputs, "haproxy_tls_certificate", "haproxy_tls_key")
    if servers:
        out += guards.members_private(
            inputs, "HAProxy's backends", servers, "haproxy_backend_address"
        )
    for name in ("haproxy_go_rate_limit", "haproxy_go_rate_period_s", "haproxy_body_limit_bytes"):
        if int(inputs[name]) <= 0:
            out.append(inputs.problem(name, "must be above 0"))
    return out


def _servers(inputs: Inputs, out: list[str]) -> list[str]:
    """The app nodes HAProxy balances (problems appended to ``out``)."""
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
    return servers


def haproxy_acme(inputs: Any) -> list[str]:
    """ACME over HTTP-01 (docs/https.md): names the CA can reach on port 80, an https directory."""
    if not boolean(inputs.get("haproxy_acme", False), strict=False):
        return []
    out = []
    domains = list(inputs.get("haproxy_acme_domains") or [])
    if not domains:
        out.append(inputs.problem("haproxy_acme_domains", "lists no name to certify"))
    for name in domains:
        if _is_ip(str(name)) or not re.fullmatch(
            r"(?=.{1,253}$)([a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?\.?)+", str(name)
        ):
            out.append(inputs.problem("haproxy_acme_domains", f"{name!r} is not a DNS name"))
    if not str(inputs.get("haproxy_acme_directory", "")).startswith("https://"):
        out.append(inputs.problem("haproxy_acme_directory", "must be an https:// URL"))
    if not 1 <= int(inputs.get("haproxy_acme_port", 0)) <= 65535:
        out.append(inputs.problem("haproxy_acme_port", "must be a TCP port"))
    return out


def _is_ip(text: str) -> bool:
    try:
        ipaddress.ip_address(text)
    except ValueError:
        return False
    return True
