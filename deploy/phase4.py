"""Phase 4 with pyinfra: exporters on every monitored host, then common + exporters + monitoring
on the monitoring host, as playbooks/phase4.yml.

    pyinfra -y --limit app --limit db --limit lb --limit redis --limit monitoring \\
        deploy/inventory.py deploy/phase4.py

Ordering and glue only: each role's manifest (roles/<role>/vars/main.yml) is applied by
grimbots_infra.apply, stage by stage as the role's tasks do; the pg_monitor role is created by
the exporters role's host-side helper, which Ansible calls too.
"""

from __future__ import annotations

from pyinfra import host

from grimbots_infra import apply
from grimbots_infra.pyinfra_ops import fact, host_step, host_vars, require_phase

MONITORED = ("app", "db", "lb", "redis", "monitoring")


def common(variables) -> None:
    apply.install("common", variables)
    apply.service("common", variables, apply.configure("common", variables))


def firewall(variables) -> None:
    apply.install("firewall", variables)
    apply.service("firewall", variables, apply.configure("firewall", variables))


def exporters(variables) -> None:
    changed_files = apply.install("exporters", variables)
    triggers = apply.configure("exporters", variables)
    if variables["exporters_postgres"]:
        ensure = (
            f"{variables['platform_lib_dir']}/postgres-exporter-ensure-role "
            f"{variables['exporters_postgres_password_file']} "
            f"{variables['exporters_postgres_username']} "
            f"{variables['exporters_postgres_db_port']}"
        )
        host_step(
            name="Create postgres_exporter's pg_monitor role on the Patroni leader, or fix it",
            command=ensure,
            check=ensure.replace(" ", " --check ", 1),
        )
    apply.service("exporters", variables, triggers, changed_files)


def monitoring(variables) -> None:
    changed_files = apply.install("monitoring", variables)
    apply.service("monitoring", variables, apply.configure("monitoring", variables), changed_files)


if any(g in host.groups for g in MONITORED):
    require_phase(4)
    if "monitoring" in host.groups:
        _states = fact(
            "systemctl is-active prometheus prometheus-alertmanager grafana-server"
        ).split() + ["", "", ""]
        variables = host_vars(
            ("common", "firewall", "exporters", "monitoring"),
            {
                "monitoring_prometheus_active_before": _states[0] == "active",
                "monitoring_alertmanager_active_before": _states[1] == "active",
                "monitoring_grafana_active_before": _states[2] == "active",
            },
        )
        common(variables)
        firewall(variables)
        exporters(variables)
        monitoring(variables)
    else:
        variables = host_vars(("firewall", "exporters"))
        firewall(variables)
        exporters(variables)
