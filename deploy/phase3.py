"""Phase 3 with pyinfra: common + redis_cluster + queue_redis on the redis hosts, common +
haproxy on the lb host, then phase 1's deploy (at platform_phase 3: the app on every app host,
the first one's local Redis moved and retired), as playbooks/phase3.yml.

    pyinfra -y --limit lb --limit redis --limit app deploy/inventory.py deploy/phase3.py

Ordering and glue only: each role's manifest (roles/<role>/vars/main.yml) is applied by
grimbots_infra.apply, stage by stage as the role's tasks do; the stateful steps are the roles'
host-side helpers, which Ansible calls too (host_step: run when the helper's --check says so).
"""

from __future__ import annotations

import shlex
from pathlib import Path

from pyinfra import host, local

from grimbots_infra import apply, roles
from grimbots_infra.pyinfra_ops import barrier, host_step, host_vars, require_phase, wait

LB_ROLES = ("common", "firewall", "haproxy")
REDIS_ROLES = ("common", "firewall", "redis_cluster", "queue_redis")


def common(variables) -> None:
    apply.install("common", variables)
    apply.service("common", variables, apply.configure("common", variables))
    apply.install("firewall", variables)
    apply.service("firewall", variables, apply.configure("firewall", variables))


def redis_cluster(variables) -> None:
    apply.install("redis_cluster", variables)
    apply.service("redis_cluster", variables, apply.configure("redis_cluster", variables))


def redis_cluster_create(variables) -> None:
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


def queue_redis(variables) -> None:
    apply.install("queue_redis", variables)
    apply.service("queue_redis", variables, apply.configure("queue_redis", variables))
    others = len(variables["queue_redis_members"]) - 1
    wait(
        name="Wait until the primary has its replicas and every Sentinel sees the others",
        command=f"{variables['queue_redis_lib_dir']}/queue-redis-wait "
        f"{variables['queue_redis_wait_timeout']} {variables['queue_redis_sentinel_port']} "
        f"{variables['queue_redis_master_name']} {others} {others}",
    )


require_phase(3)
if "redis" in host.groups:
    redis_variables = host_vars(REDIS_ROLES)
    common(redis_variables)
    redis_cluster(redis_variables)
barrier(name="Every Redis host runs its cluster instances before the cluster is created")
if "redis" in host.groups:
    redis_cluster_create(redis_variables)
    queue_redis(redis_variables)
if "lb" in host.groups:
    lb_variables = host_vars(LB_ROLES)
    common(lb_variables)
    roles.pyinfra_steps("haproxy").apply_role(lb_variables)
barrier(name="The Redis hosts and HAProxy are ready before the app moves onto them")
if "app" in host.groups:
    local.include(str(Path(__file__).with_name("phase1.py")))
