"""Every role a deploy may apply: whose defaults the inventory loader layers under every host's
variables (lowest precedence) for both deploy tools and the lab tests. Derived from the folders
under roles/ (grimbots_infra.roles), so adding a role lists it nowhere; which role a phase applies
to which group is said by each phase's playbook and pyinfra deploy."""

from __future__ import annotations

from grimbots_infra import roles

ALL_ROLES = roles.names()
