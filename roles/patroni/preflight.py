"""The patroni role's preflight checks: run by both deploy tools through
grimbots_infra.preflight.check (roles/platform/README.md, "A role's checks")."""

from __future__ import annotations

from grimbots_infra import derive, guards, roles
from grimbots_infra.preflight import Inputs


def check(inputs: Inputs) -> list[str]:
    derived = roles.derived("patroni")
    out = []
    group = inputs["patroni_group"]
    members = list(inputs["groups"].get(group, []))
    if len(members) < 3 or len(members) % 2 == 0 or inputs.host not in members:
        out.append(
            inputs.problem(
                "patroni_group",
                f"etcd needs an odd number (3+) of members including {inputs.host}; "
                f"'{group}' has {members}",
            )
        )
    t = derived.patroni_timings(inputs["patroni_recovery_seconds"])
    if t["ttl"] < derived.PATRONI_MIN_TTL or t["loop_wait"] + 2 * t["retry_timeout"] > t["ttl"]:
        out.append(
            inputs.problem(
                "patroni_recovery_seconds",
                f"Patroni's ttl must be at least {derived.PATRONI_MIN_TTL} s (its documented "
                f"bound); gives {t}",
            )
        )
    for key in (
        "patroni_superuser_password",
        "patroni_replication_password",
        "patroni_rewind_password",
        "patroni_restapi_password",
        "patroni_app_password",
    ):
        if guards.placeholder(inputs, key):
            out += guards.placeholder(inputs, key)
        elif len(str(inputs.get(key, ""))) < 16:
            out.append(inputs.problem(key, "needs 16+ characters from the vault"))
    hostvars = inputs["hostvars"]
    addresses = [derive.address(hostvars, m) for m in members]
    if len(set(addresses)) != len(addresses):
        out.append(inputs.problem("patroni_address", f"each member needs its own; got {addresses}"))
    out += guards.own_private(inputs, "patroni_address")
    out += guards.members_private(inputs, "etcd and Patroni", members, "patroni_address")
    groups = inputs["groups"]
    clients = [h for g in inputs.get("patroni_client_groups", []) for h in groups.get(g, [])]
    return out + guards.members_private(inputs, "pg_hba", clients, "patroni_client_address")
