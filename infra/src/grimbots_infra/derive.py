"""Values derived from inventory knobs that several roles share (each role's own are in
``roles/<role>/derived.py``, grimbots_infra.roles.derived).

Ansible reads them through the filter plugin of the platform role
(roles/platform/filter_plugins/platform.py, e.g. ``grimbots_addresses``); pyinfra, the preflight
checks and the lab tests import them directly.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any


def address(hostvars: Mapping[str, Any], name: str, key: str = "patroni_address") -> str:
    """A host's address for ``key`` (its inventory value), else its private address
    (platform_private_address: production's front-door hosts have a public ansible_host), else
    its ansible_host (the lab's and molecule's hosts have one, private, address)."""
    other = hostvars[name]
    return str(
        other.get(key) or other.get("platform_private_address") or other.get("ansible_host") or name
    )


def postgres_url(
    addresses: Iterable[str], port: int | str, database: str, user: str, options: Iterable[str]
) -> str:
    """The libpq multi-host URL of the app (no password: libpq reads PGPASSWORD)."""
    hosts = ",".join(f"{a}:{int(port)}" for a in addresses)
    return f"postgresql://{user}@{hosts}/{database}?{'&'.join(options)}"


def addresses(
    members: Iterable[str], hostvars: Mapping[str, Any], key: str = "patroni_address"
) -> list[str]:
    """Each member's address for ``key`` (see address), in the group's order."""
    return [address(hostvars, m, key) for m in members]
