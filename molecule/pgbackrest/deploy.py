"""The pgbackrest role with pyinfra, as roles/pgbackrest/tasks/main.yml applies it: the manifest
on the db hosts and the backup host, then on the backup host the stanza and `pgbackrest check`
(roles/pgbackrest/pyinfra_steps.py, which deploy/phase2.py runs too). side_effect.yml runs it
over Ansible's converge and expects no change.

    GRIMBOTS_INVENTORY=<dir> pyinfra -y deploy/inventory.py molecule/pgbackrest/deploy.py
"""

from __future__ import annotations

from pyinfra import host

from grimbots_infra import apply
from grimbots_infra.pyinfra_ops import host_vars

if "db" in host.groups or "backup" in host.groups:
    apply.role("pgbackrest", host_vars(("pgbackrest",)))
