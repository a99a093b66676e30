"""Phase 2 with pyinfra: common + patroni on the db hosts, then phase 1's deploy (at
platform_phase 2 the app role moves the first app host's SQLite data to PostgreSQL, once), as
playbooks/phase2.yml.

    pyinfra -y --limit db --limit app deploy/inventory.py deploy/phase2.py

Ordering and glue only: each role's manifest (roles/<role>/vars/main.yml) is applied by
grimbots_infra.apply, stage by stage as the role's tasks do; waits and stateful steps are the
roles' host-side helpers, which Ansible calls too. One run from empty db hosts: a barrier keeps
every app host's step after every db host's, and the steps that depend on earlier ones decide
when they execute (host_step: the helper's --check).
"""

from __future__ import annotations

from pathlib import Path

from pyinfra import host, local

from grimbots_infra import apply
from grimbots_infra.pyinfra_ops import (
    barrier,
    fact,
    host_step,
    host_vars,
    inventory_var,
    require_phase,
    wait,
)

DB_ROLES = ("common", "firewall", "patroni")


def step(name: str, command: str) -> None:
    """A host-side helper that says itself whether it has anything to do (--check)."""
    host_step(name=name, command=command, check=command.replace(" ", " --check ", 1))


def db(variables) -> None:
    lib, timeout = variables["patroni_lib_dir"], variables["patroni_wait_timeout"]
    apply.install("common", variables)
    apply.service("common", variables, apply.configure("common", variables))
    apply.install("firewall", variables)
    apply.service("firewall", variables, apply.configure("firewall", variables))
    apply.install("patroni", variables)
    apply.service("patroni", variables, apply.configure("patroni", variables))
    wait(
        name="Wait until every etcd member is healthy (quorum)",
        command=f"{lib}/wait-etcd {timeout} {variables['patroni_etcd_endpoints']}",
    )
    wait(
        name="Wait until the cluster has one leader, every member running and a sync standby",
        command=f"{lib}/patroni-wait-cluster {timeout} "
        f"http://{variables['patroni_address']}:{variables['patroni_restapi_port']} "
        f"{len(variables['patroni_members'])} {variables['patroni_synchronous_node_count']}",
    )
    ensure = f"{lib}/patroni-ensure-database {variables['patroni_config_dir']}/app-database.json"
    host_step(
        name="Create the app's role and database on the leader, or fix the password or owner",
        command=f"runuser -u postgres -- {ensure}",
        check=f"runuser -u postgres -- {ensure} --check",
    )
    if host.name == variables["patroni_members"][0]:  # Ansible: run_once
        step("Apply the cluster-wide settings", f"{lib}/patroni-apply-dynamic "
             f"{variables['patroni_config_dir']}/dynamic.yml")  # fmt: skip
    step("Keep etcd's leadership off the PostgreSQL leader", f"{lib}/patroni-etcd-leader-away")


require_phase(2)
if "db" in host.groups:
    _states = fact("systemctl is-active etcd patroni").split() + ["", ""]
    _healthy = fact(f"{inventory_var('patroni_lib_dir')}/wait-etcd 1 && echo yes") == "yes"
    db(
        host_vars(
            DB_ROLES,
            {
                "patroni_etcd_active_before": _states[0] == "active",
                "patroni_active_before": _states[1] == "active",
                "patroni_etcd_healthy_before": _healthy,
            },
        )
    )
barrier(name="Every db host is done before an app host starts")
if "app" in host.groups:
    local.include(str(Path(__file__).with_name("phase1.py")))
