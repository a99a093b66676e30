"""Derived values for the roles' templates and tasks: the ones several roles share from
grimbots_infra.derive, each role's own from its ``roles/<role>/derived.py`` (its FILTERS), the same
functions pyinfra, the preflight checks and the lab tests call."""

from __future__ import annotations

import posixpath

from grimbots_infra import derive, firewall, roles


def preseed_directories(items: list[dict]) -> list[dict]:
    """The directories of a manifest's preseed files (root's, 0755), for grimbots_files."""
    paths = dict.fromkeys(posixpath.dirname(str(i["dest"])) for i in items)
    return [{"path": p, "owner": "root", "group": "root", "mode": "0755"} for p in paths]


class FilterModule:
    """grimbots_* filters: one implementation of every value derived from a knob."""

    def filters(self) -> dict:
        return {
            "grimbots_postgres_url": derive.postgres_url,
            "grimbots_addresses": derive.addresses,
            "grimbots_firewall_ports": firewall.ports,
            "grimbots_firewall_rules": firewall.rules,
            "grimbots_preseed_directories": preseed_directories,
            **roles.filters(),
        }
