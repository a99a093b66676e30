"""The exporters with pyinfra: the exporters role's stages and its pg_monitor helper, in the
order its tasks run them (roles/exporters/tasks/main.yml), through grimbots_infra.apply.role."""

from __future__ import annotations

from typing import Any

from grimbots_infra import apply
from grimbots_infra.pyinfra_ops import host_step


def apply_role(variables: dict[str, Any]) -> None:
    """Install, configure, postgres_exporter's pg_monitor role (db hosts), service."""
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
