"""The monitoring host with pyinfra: ``state`` is what roles/monitoring/tasks/state.yml reads
before anything changes (a change then reloads what already runs); the stages are the manifest's
(grimbots_infra.apply.role)."""

from __future__ import annotations

from typing import Any

from grimbots_infra import apply
from grimbots_infra.pyinfra_ops import fact


def state() -> dict[str, bool]:
    """Whether Prometheus, Alertmanager and Grafana run before this deploy."""
    states = fact("systemctl is-active prometheus prometheus-alertmanager grafana-server").split()
    states += ["", "", ""]
    return {
        "monitoring_prometheus_active_before": states[0] == "active",
        "monitoring_alertmanager_active_before": states[1] == "active",
        "monitoring_grafana_active_before": states[2] == "active",
    }


def apply_role(variables: dict[str, Any]) -> None:
    """Install, configure, service."""
    installed = apply.install("monitoring", variables)
    apply.service("monitoring", variables, apply.configure("monitoring", variables), installed)
