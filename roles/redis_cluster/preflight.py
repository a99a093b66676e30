"""The redis_cluster role's preflight checks: run by both deploy tools through
grimbots_infra.preflight.check (roles/platform/README.md, "A role's checks")."""

from __future__ import annotations

from grimbots_infra import derive, guards
from grimbots_infra.preflight import Inputs, vault_password


def check(inputs: Inputs) -> list[str]:
    out = []
    group = inputs["redis_cluster_group"]
    members = list(inputs["groups"].get(group, []))
    anti_affinity = bool(inputs["redis_cluster_anti_affinity"])
    if inputs.host not in members or (anti_affinity and len(members) < 3):
        out.append(
            inputs.problem(
                "redis_cluster_group",
                f"a cluster of 3 masters with replicas on other hosts needs 3+ hosts including "
                f"{inputs.host}; '{group}' has {members}",
            )
        )
    ports = [int(p) for p in inputs["redis_cluster_ports"]]
    if len(ports) != 2 or ports[0] == ports[1]:
        out.append(inputs.problem("redis_cluster_ports", "needs two ports: masters', replicas'"))
    platform_ports = inputs.get("platform_ports")  # absent only in the unit tests' inputs
    bus = [int(p) for p in (platform_ports or {}).get("redis_cluster_bus", [])]
    if platform_ports is not None and bus != [p + 10000 for p in ports]:
        out.append(
            inputs.problem(
                "platform_ports",
                f"redis_cluster_bus must be each redis_cluster_ports + 10000 (where Redis puts "
                f"its cluster bus), {[p + 10000 for p in ports]}; got {bus}",
            )
        )
    addresses = derive.addresses(members, inputs["hostvars"], "redis_cluster_address")
    if anti_affinity and len(set(addresses)) != len(addresses):
        out.append(inputs.problem("redis_cluster_address", f"each host needs its own: {addresses}"))
    if int(inputs["redis_cluster_recovery_seconds"]) < 5:
        out.append(
            inputs.problem(
                "redis_cluster_recovery_seconds",
                "must be at least 5 s (a 1 s node timeout, the replica's election, the client)",
            )
        )
    out += guards.own_private(inputs, "redis_cluster_address")
    return out + vault_password(inputs, "redis_cluster_password")
