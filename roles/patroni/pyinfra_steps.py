"""PostgreSQL HA with pyinfra: the patroni role's stages and host-side helpers, in the order its
tasks run them (roles/patroni/tasks/main.yml). Phase 2's deploy runs it on the db hosts, through
grimbots_infra.apply.role; ``state`` is what tasks/state.yml reads before anything changes."""

from __future__ import annotations

from typing import Any

from pyinfra import host

from grimbots_infra import apply
from grimbots_infra.pyinfra_ops import fact, host_step, inventory_var, wait


def state() -> dict[str, bool]:
    """Whether etcd and Patroni run and etcd is healthy, before this deploy changes anything
    (a change then restarts or reloads them, one member at a time)."""
    states = fact("systemctl is-active etcd patroni").split() + ["", ""]
    healthy = fact(f"{inventory_var('patroni_lib_dir')}/wait-etcd 1 && echo yes") == "yes"
    return {
        "patroni_etcd_active_before": states[0] == "active",
        "patroni_active_before": states[1] == "active",
        "patroni_etcd_healthy_before": healthy,
    }


def _step(name: str, command: str) -> None:
    """A helper that says itself whether it has anything to do (its --check form)."""
    host_step(name=name, command=command, check=command.replace(" ", " --check ", 1))


def apply_role(variables: dict[str, Any]) -> None:
    """Install, configure, service; wait for quorum and the cluster; the app's database, the
    cluster-wide settings (once), etcd's leadership away from PostgreSQL's leader."""
    lib, timeout = variables["patroni_lib_dir"], variables["patroni_wait_timeout"]
    installed = apply.install("patroni", variables)
    apply.service("patroni", variables, apply.configure("patroni", variables), installed)
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
        _step(
            "Apply the cluster-wide settings",
            f"{lib}/patroni-apply-dynamic {variables['patroni_config_dir']}/dynamic.yml",
        )
    _step("Keep etcd's leadership off the PostgreSQL leader", f"{lib}/patroni-etcd-leader-away")
