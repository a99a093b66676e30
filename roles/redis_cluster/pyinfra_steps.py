"""Redis Cluster with pyinfra: the redis_cluster role's stages (roles/redis_cluster/tasks/
main.yml) through grimbots_infra.apply.role, then ``create_cluster`` (tasks/cluster.yml), which
phase 3's deploy calls once every Redis host runs its instances (Ansible's task order gives that
for free: each task runs on every host before the next)."""

from __future__ import annotations

import shlex
from typing import Any

from pyinfra import host

from grimbots_infra import apply
from grimbots_infra.pyinfra_ops import host_step


def apply_role(variables: dict[str, Any]) -> None:
    """Install, configure, service: every instance of this host running."""
    installed = apply.install("redis_cluster", variables)
    apply.service(
        "redis_cluster", variables, apply.configure("redis_cluster", variables), installed
    )


def create_cluster(variables: dict[str, Any]) -> None:
    """Once, from the first Redis host (Ansible: run_once), after every host's instances run."""
    if host.name != variables["redis_cluster_members"][0]:
        return
    args = shlex.join(
        ([] if variables["redis_cluster_anti_affinity"] else ["--no-anti-affinity"])
        + [str(variables["redis_cluster_wait_timeout"])]
        + [str(p) for p in variables["redis_cluster_ports"]]
        + list(variables["redis_cluster_addresses"])
    )
    helper = f"{variables['redis_cluster_lib_dir']}/redis-cluster-create"
    host_step(
        name="Create the cluster if none exists, keep replicas off their masters' hosts",
        command=f"{helper} {args}",
        check=f"{helper} --check {args}",
    )
