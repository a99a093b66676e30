"""lookup('grimbots_preflight', NAME...): the problems of this host's variables (role defaults
included) for each name: a role (its roles/<role>/preflight.py, loaded by grimbots_infra.roles)
or a phase guard (phaseN); [] when none. The pyinfra deploys run the same checks on the same
variables (grimbots_infra.preflight.check) before touching a host."""

from __future__ import annotations

from ansible.plugins.lookup import LookupBase

from grimbots_infra import preflight
from grimbots_infra.inventory import origin_of

DOCUMENTATION = """
name: grimbots_preflight
short_description: the shared preflight checks of the named roles, for this host
description:
  - Runs each named role's preflight.py check (or phase guard) on this host's variables.
options:
  _terms:
    description: role names, or phaseN for a phase's guard
    required: true
"""


# Ansible's own lazy view of every host's variables, each templated on access in its host's
# context: templating it whole renders every variable of every host (about 0.7 s on the lab,
# once per check that reads a group member's address: most of a no-op rerun's time).
LAZY = frozenset({"hostvars"})


class LookupModule(LookupBase):
    def run(self, terms, variables=None, **kwargs):
        variables = variables or {}
        templar = self._templar
        templated: dict[str, object] = {}

        def get(name):
            if name not in variables:
                raise KeyError(name)
            if name in LAZY:
                return variables[name]
            if name not in templated:  # a check reads platform_groups ~20 times per host
                templated[name] = templar.template(variables[name])
            return templated[name]

        inputs = preflight.Inputs(
            str(variables.get("inventory_hostname", "?")),
            get,
            lambda name: origin_of(variables.get(name)),
        )
        return preflight.check(list(terms), inputs)
