"""Phase 2 with pyinfra: common + firewall + patroni + pgbackrest on the db hosts, common +
firewall + pgbackrest on the backup host (the repository, its stanza, `pgbackrest check`), then
phase 1's deploy (at platform_phase 2 the app role moves the first app host's SQLite data to
PostgreSQL, once), as playbooks/phase2.yml.

    pyinfra -y --limit db --limit backup --limit app deploy/inventory.py deploy/phase2.py

Ordering only: each role is applied by grimbots_infra.apply.role (its manifest, or its
roles/<role>/pyinfra_steps.py with the waits and host-side helpers Ansible calls too). One run
from empty db hosts: a barrier keeps every app host's step after every db host's, and the steps
that depend on earlier ones decide when they execute (host_step: the helper's --check).
"""

from __future__ import annotations

from pathlib import Path

from pyinfra import host, local

from grimbots_infra import apply
from grimbots_infra.pyinfra_ops import barrier, host_vars, require_phase

DB_ROLES = ("common", "firewall", "patroni", "pgbackrest")
BACKUP_ROLES = ("common", "firewall", "pgbackrest")

require_phase(2)
# The backup host's stanza and check come after every host's pgBackRest service stage: pyinfra
# runs each operation on every host before the next (the role's place orders them).
applied = DB_ROLES if "db" in host.groups else BACKUP_ROLES if "backup" in host.groups else ()
if applied:
    variables = host_vars(applied)  # with patroni's state before this run (pyinfra_steps.state)
    for role in applied:
        apply.role(role, variables)
barrier(name="Every db host is done before an app host starts")
if "app" in host.groups:
    local.include(str(Path(__file__).with_name("phase1.py")))
