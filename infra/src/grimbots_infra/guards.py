"""Checks every role's preflight shares: the platform phase, secrets left at the example vault's
placeholders, TLS certificates that must parse and match their key, and internal addresses that
must be private (a public one puts etcd, PostgreSQL or Redis on the internet, or matches no
pg_hba line). Each returns messages naming the host and the variable, as preflight's do.
"""

from __future__ import annotations

import datetime
import ipaddress
import re
from collections.abc import Iterable, Mapping
from typing import TYPE_CHECKING

from grimbots_infra import derive

if TYPE_CHECKING:  # preflight imports this module
    from grimbots_infra.preflight import Inputs

PHASES = (1, 2, 3, 4)
# The example vault's (inventory/production/group_vars/all/vault.yml.example) placeholders.
PLACEHOLDER = re.compile(r"CHANGE-?ME", re.I)
PLACEHOLDER_CHAT_ID = -1000000000000
# Where internal services may listen and be reached: RFC 1918, shared (RFC 6598), loopback,
# unique local IPv6. Anything else that parses as an IP address is public.
PRIVATE_NETWORKS = tuple(
    ipaddress.ip_network(n)
    for n in ("10.0.0.0/8", "172.16.0.0/12", "192.168.0.0/16", "100.64.0.0/10", "127.0.0.0/8")
) + tuple(ipaddress.ip_network(n) for n in ("fc00::/7", "::1/128"))


def phase(inputs: Inputs, minimum: int = 1) -> list[str]:
    """platform_phase must be one of 1-4 and at least ``minimum`` (the phase being deployed)."""
    value = inputs.get("platform_phase")
    number = None
    if isinstance(value, int) and not isinstance(value, bool):
        number = value
    elif isinstance(value, str) and value.strip().isdigit():
        number = int(value.strip())  # `-e platform_phase=3` arrives as a string
    if number not in PHASES:
        return [
            f"{inputs.host}: platform_phase={value!r}: must be one of 1, 2, 3, 4 (the phase the "
            f"platform is at); set it in {inputs.where('platform_phase')}"
        ]
    if number < minimum:
        return [
            f"{inputs.host}: platform_phase={number}: set platform_phase: {minimum} in "
            f"{inputs.where('platform_phase')} (the lab: export GRIMBOTS_LAB_PHASE={minimum}) "
            f"before deploying phase {minimum}, so that every role derives its settings"
        ]
    return []


def placeholder(inputs: Inputs, name: str) -> list[str]:
    """A secret (or each value of a dict of secrets) still at the example vault's placeholder."""
    value = inputs.get(name, "")
    values = value.values() if isinstance(value, Mapping) else [value]
    if any(PLACEHOLDER.search(str(v)) for v in values):
        return [
            inputs.problem(
                name,
                "is the example vault's placeholder (vault.yml.example): put a real value in "
                "the vault (passwords: `openssl rand -hex 24`)",
            )
        ]
    return []


def chat_id(inputs: Inputs, name: str) -> list[str]:
    """A Telegram chat id: an integer, not 0 nor the example's -1000000000000."""
    try:
        value = int(inputs.get(name, 0))
    except (TypeError, ValueError):
        value = 0
    if value in (0, PLACEHOLDER_CHAT_ID):
        return [inputs.problem(name, "needs the alert chat's id (vault), not the example's")]
    return []


def certificate(inputs: Inputs, cert_name: str, key_name: str) -> list[str]:
    """A PEM chain (leaf first) that parses, has not expired, and whose leaf matches the key."""
    from cryptography import x509
    from cryptography.hazmat.primitives import serialization

    out = placeholder(inputs, cert_name) + placeholder(inputs, key_name)
    if out:
        return out
    cert_pem = str(inputs.get(cert_name, "")).encode()
    key_pem = str(inputs.get(key_name, "")).encode()
    leaf = key = None
    try:
        leaf = x509.load_pem_x509_certificates(cert_pem)[0]
    except ValueError:
        out.append(
            inputs.problem(
                cert_name,
                "needs the PEM certificate chain, leaf first (or haproxy_tls_selfsigned: true "
                "in a lab)",
            )
        )
    try:
        key = serialization.load_pem_private_key(key_pem, password=None)
    except (ValueError, TypeError):
        out.append(inputs.problem(key_name, "needs the unencrypted PEM private key (vault)"))
    if leaf is None or key is None:
        return out
    spki = serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    if key.public_key().public_bytes(*spki) != leaf.public_key().public_bytes(*spki):
        out.append(inputs.problem(key_name, f"does not match the leaf of {cert_name}"))
    if leaf.not_valid_after_utc <= datetime.datetime.now(datetime.UTC):
        out.append(
            inputs.problem(cert_name, f"expired on {leaf.not_valid_after_utc:%Y-%m-%d}: renew it")
        )
    return out


def is_public(address: str) -> bool:
    """An IP address outside PRIVATE_NETWORKS (a name is taken as the operator wrote it)."""
    try:
        ip = ipaddress.ip_address(address.strip("[]"))
    except ValueError:
        return False
    return not any(ip in net for net in PRIVATE_NETWORKS)


def private(inputs: Inputs, used_for: str, pairs: Iterable[tuple[str, str]], key: str) -> list[str]:
    """Each (host, address) an internal endpoint of ``used_for`` is built from must be private;
    ``key`` is the host's own variable for it (else platform_private_address, else
    ansible_host: derive.address)."""
    return [
        f"{inputs.host}: {used_for} uses {key}={address} of {member}, a public address: internal "
        f"services must use the private network; set platform_private_address (its private IP) "
        f"for {member} in the inventory's hosts.yml (or {key} in its host_vars)"
        for member, address in pairs
        if is_public(str(address))
    ]


def members_private(inputs: Inputs, used_for: str, members: Iterable[str], key: str) -> list[str]:
    """``private`` for group members whose address derive.address reads from ``key``."""
    hostvars = inputs.get("hostvars", {})
    members = [m for m in members if m in hostvars]
    addresses = derive.addresses(members, hostvars, key)
    return private(inputs, used_for, zip(members, addresses, strict=True), key)


def own_private(inputs: Inputs, name: str) -> list[str]:
    """This host's own listening address ``name`` must be private."""
    return private(inputs, name, [(inputs.host, str(inputs.get(name, "")))], name)


def listed(inputs: Inputs, name: str, members: list[str], key: str) -> list[str]:
    """A rendered list ``name`` (comma-separated ``address[:port]``, one entry per member in the
    group's order) must name each member's ``key`` (derive.address: what the member's role binds),
    and that address must be private."""
    entries = [e for e in str(inputs.get(name, "")).split(",") if e]
    listed = [e.rsplit(":", 1)[0] if e.count(":") == 1 else e for e in entries]
    expected = derive.addresses(members, inputs.get("hostvars", {}), key)
    out = [
        f"{inputs.host}: {name} lists {got} for {member}, whose {key} (what its service binds) "
        f"is {want}: set {name} (or the host's address) in the inventory so they agree"
        for member, got, want in zip(members, listed, expected, strict=False)
        if got != want
    ]
    return out + members_private(inputs, name, members, key)


def secrets(inputs: Inputs, names: Iterable[str]) -> list[str]:
    """``placeholder`` for each name."""
    return [p for name in names for p in placeholder(inputs, name)]
