"""The pgbackrest role with pyinfra, as roles/pgbackrest/tasks/main.yml applies it: the manifest
on the db hosts and the backup host, then on the backup host the stanza and `pgbackrest check`.
side_effect.yml runs it over Ansible's converge and expects no change. The role is in no phase
yet (roles/pgbackrest/README.md): this glue moves to deploy/phase2.py when it is.

    GRIMBOTS_INVENTORY=<dir> pyinfra -y deploy/inventory.py molecule/pgbackrest/deploy.py
"""

from __future__ import annotations

from pyinfra import host

from grimbots_infra import apply
from grimbots_infra.pyinfra_ops import host_step, host_vars, wait

if "db" in host.groups or "backup" in host.groups:
    variables = host_vars(("pgbackrest",))
    changed_files = apply.install("pgbackrest", variables)
    triggers = apply.configure("pgbackrest", variables)
    apply.service("pgbackrest", variables, triggers, changed_files)
    if "backup" in host.groups:
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
