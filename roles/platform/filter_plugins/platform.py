"""Derived values for the roles' templates and tasks: the ones several roles share from
grimbots_infra.derive, each role's own from its ``roles/<role>/derived.py`` (its FILTERS), the same
functions pyinfra, the preflight checks and the lab tests call."""

from __future__ import annotations

from grimbots_infra import derive, firewall, roles


class FilterModule:
    """grimbots_* filters: one implementation of every value derived from a knob."""

    def filters(self) -> dict:
        return {
            "grimbots_postgres_url": derive.postgres_url,
            "grimbots_addresses": derive.addresses,
            "grimbots_firewall_ports": firewall.ports,
            "grimbots_firewall_rules": firewall.rules,
            **roles.filters(),
        }
