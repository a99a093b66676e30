"""The queue Redis with pyinfra: the queue_redis role's stages, then its wait, in the order its
tasks run them (roles/queue_redis/tasks/main.yml), through grimbots_infra.apply.role."""

from __future__ import annotations

from typing import Any

from grimbots_infra import apply
from grimbots_infra.pyinfra_ops import wait


def apply_role(variables: dict[str, Any]) -> None:
    """Install, seed the files, service; wait for the replicas and the Sentinels."""
    installed = apply.install("queue_redis", variables)
    apply.service("queue_redis", variables, apply.configure("queue_redis", variables), installed)
    others = len(variables["queue_redis_members"]) - 1
    wait(
        name="Wait until the primary has its replicas and every Sentinel sees the others",
        command=f"{variables['queue_redis_lib_dir']}/queue-redis-wait "
        f"{variables['queue_redis_wait_timeout']} {variables['queue_redis_sentinel_port']} "
        f"{variables['queue_redis_master_name']} {others} {others}",
    )
