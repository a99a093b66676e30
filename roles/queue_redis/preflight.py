"""The queue_redis role's preflight checks: run by both deploy tools through
grimbots_infra.preflight.check (roles/platform/README.md, "A role's checks")."""

from __future__ import annotations

from grimbots_infra import guards
from grimbots_infra.preflight import Inputs, vault_password


def check(inputs: Inputs) -> list[str]:
    out = []
    group = inputs["queue_redis_group"]
    members = list(inputs["groups"].get(group, []))
    quorum = int(inputs["queue_redis_quorum"])
    if inputs.host not in members or len(members) < 3:
        out.append(
            inputs.problem(
                "queue_redis_group",
                f"a primary, 2+ replicas and 3+ Sentinels need 3+ hosts including {inputs.host}; "
                f"'{group}' has {members}",
            )
        )
    elif not len(members) // 2 < quorum <= len(members):
        out.append(
            inputs.problem(
                "queue_redis_quorum",
                f"must be a majority of the {len(members)} Sentinels (two sides of a split "
                "must never both fail over)",
            )
        )
    if not 0 < int(inputs["queue_redis_min_replicas_to_write"]) < max(len(members), 2):
        out.append(
            inputs.problem(
                "queue_redis_min_replicas_to_write",
                "must be 1+ (an acknowledged job on two hosts) and below the host count "
                "(writes go on while one replica is down)",
            )
        )
    if int(inputs["queue_redis_recovery_seconds"]) < 4:
        out.append(inputs.problem("queue_redis_recovery_seconds", "must be at least 4 s"))
    out += guards.own_private(inputs, "queue_redis_address")
    return out + vault_password(inputs, "queue_redis_password")
