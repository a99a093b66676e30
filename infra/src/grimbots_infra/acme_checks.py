"""Preflight of the front door's ACME settings (roles/haproxy, docs/https.md), registered through
grimbots_infra.preflight's haproxy check."""

from __future__ import annotations

import ipaddress
import re
from typing import Any


def haproxy_acme(inputs: Any) -> list[str]:
    """ACME over HTTP-01 (docs/https.md): names the CA can reach on port 80, an https directory."""
    if not truthy(inputs.get("haproxy_acme", False)):
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


def truthy(value: Any) -> bool:
    return str(value).strip().lower() in ("true", "yes", "1", "on")
