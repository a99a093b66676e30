"""lookup('grimbots_phase_roles', N): the roles playbooks/phaseN.yml's plays apply to this host,
in order (grimbots_infra.phases.playbook_roles): what a playbook's first play checks before any
host changes, each through the role's tasks/preflight.yml (so with the role's defaults). The
plays say once which roles a phase applies; the pyinfra deploy says it in its role lists."""

from __future__ import annotations

from ansible.plugins.lookup import LookupBase

from grimbots_infra import phases
from grimbots_infra.inventory import role_dir

DOCUMENTATION = """
name: grimbots_phase_roles
short_description: the roles a phase's playbook applies to this host
description:
  - Reads playbooks/phaseN.yml (and the playbooks it imports) and lists the roles of every play
    whose hosts include this host and whose pre_tasks do not end it.
options:
  _terms:
    description: the phase number
    required: true
"""


class LookupModule(LookupBase):
    def run(self, terms, variables=None, **kwargs):
        # A play's or role's `when` may read the platform contract (platform_front_door), whose
        # defaults are not in scope in the preflight play: layered under the host's variables,
        # with Ansible's precedence (role defaults lowest), loaded by Ansible's own loader.
        contract = self._loader.load_from_file(str(role_dir("platform") / "defaults" / "main.yml"))
        variables = {**(contract or {}), **(variables or {})}
        templar = self._templar.copy_with_new_env(available_variables=variables)
        groups = variables.get("group_names", [])
        return [r for term in terms for r in phases.host_roles(int(term), groups, templar)]
