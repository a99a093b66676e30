"""Phase 4 with pyinfra: exporters on every monitored host, then common + exporters + monitoring
on the monitoring host, as playbooks/phase4.yml.

    pyinfra -y --limit app --limit db --limit lb --limit redis --limit monitoring \\
        deploy/inventory.py deploy/phase4.py

Ordering only: each role is applied by grimbots_infra.apply.role (its manifest, or its
roles/<role>/pyinfra_steps.py: the exporters' pg_monitor helper, which Ansible calls too; the
monitoring host's state before this run).
"""

from __future__ import annotations

from pyinfra import host

from grimbots_infra import apply
from grimbots_infra.pyinfra_ops import host_vars, require_phase

MONITORED = ("app", "db", "lb", "redis", "monitoring")
MONITORING_ROLES = ("common", "firewall", "exporters", "monitoring")
EXPORTER_ROLES = ("firewall", "exporters")

if any(g in host.groups for g in MONITORED):
    require_phase(4)
    applied = MONITORING_ROLES if "monitoring" in host.groups else EXPORTER_ROLES
    variables = host_vars(applied)
    for role in applied:
        apply.role(role, variables)
