"""Phase 3 with pyinfra: common + redis_cluster + queue_redis on the redis hosts, common +
haproxy on the lb host, then phase 1's deploy (at platform_phase 3: the app on every app host,
the first one's local Redis moved and retired), then the first app host's front door retired
(HAProxy and certbot.timer stopped), as playbooks/phase3.yml.

    pyinfra -y --limit lb --limit redis --limit app deploy/inventory.py deploy/phase3.py

Ordering only: each role is applied by grimbots_infra.apply.role (its manifest, or its
roles/<role>/pyinfra_steps.py with the host-side helpers Ansible calls too); the barriers order
the hosts (the cluster is created once every Redis host runs its instances).
"""

from __future__ import annotations

from pathlib import Path

from pyinfra import host, local

from grimbots_infra import apply, roles
from grimbots_infra.pyinfra_ops import barrier, host_vars, require_phase

LB_ROLES = ("common", "firewall", "haproxy")
REDIS_ROLES = ("common", "firewall", "redis_cluster", "queue_redis")

require_phase(3)
if "redis" in host.groups:
    redis_variables = host_vars(REDIS_ROLES)
    for role in ("common", "firewall", "redis_cluster"):
        apply.role(role, redis_variables)
barrier(name="Every Redis host runs its cluster instances before the cluster is created")
if "redis" in host.groups:
    roles.pyinfra_steps("redis_cluster").create_cluster(redis_variables)
    apply.role("queue_redis", redis_variables)
if "lb" in host.groups:
    lb_variables = host_vars(LB_ROLES)
    for role in LB_ROLES:
        apply.role(role, lb_variables)
barrier(name="The Redis hosts and HAProxy are ready before the app moves onto them")
if "app" in host.groups:
    local.include(str(Path(__file__).with_name("phase1.py")))
    # The front door on lb now serves the webhooks: the first app host's own one retires.
    app_variables = host_vars(("common", "haproxy"))
    if host.name not in app_variables["platform_front_door"]:
        roles.pyinfra_steps("haproxy").retire(app_variables)
