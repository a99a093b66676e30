"""pgBackRest with pyinfra: the pgbackrest role's stages and, on the backup host, the stanza and
``pgbackrest check``, in the order its tasks run them (roles/pgbackrest/tasks/main.yml). Phase 2's
deploy runs it on the db hosts and the backup host, through grimbots_infra.apply.role; pyinfra
orders each operation across hosts, so the stanza waits for every host's TLS server (the
service stage), as Ansible's linear play does."""

from __future__ import annotations

from typing import Any

from grimbots_infra import apply
from grimbots_infra.pyinfra_ops import host_step, wait


def apply_role(variables: dict[str, Any]) -> None:
    """Install, configure, service; on the backup host create the stanza when missing, then
    check the archive and the repository (a failure fails the deploy)."""
    installed = apply.install("pgbackrest", variables)
    apply.service("pgbackrest", variables, apply.configure("pgbackrest", variables), installed)
    if not variables["pgbackrest_is_repo"]:
        return
    stanza = variables["pgbackrest_stanza_command"].strip()
    host_step(
        name="Create the stanza in the repository when it is missing",
        command=stanza,
        check=stanza.replace(" ", " --check ", 1),
    )
    wait(
        name="Check the archive and the repository (pgbackrest check)",
        command=f"runuser -u {variables['pgbackrest_user']} -- pgbackrest "
        f"--stanza={variables['pgbackrest_stanza']} check",
    )
