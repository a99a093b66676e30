"""lookup('grimbots_preflight', ROLE...): the problems grimbots_infra.preflight finds in the
variables this host's task sees (role defaults included), for the roles named; [] when none.
The pyinfra deploys run the same checks on the same variables before touching a host."""

from __future__ import annotations

from ansible.plugins.lookup import LookupBase

from grimbots_infra import preflight
from grimbots_infra.inventory import origin_of

DOCUMENTATION = """
name: grimbots_preflight
short_description: the shared preflight checks of the named roles, for this host
description:
  - Runs grimbots_infra.preflight for each role named, on this host's variables.
options:
  _terms:
    description: role names (common, app, patroni, haproxy, ...)
    required: true
"""


class LookupModule(LookupBase):
    def run(self, terms, variables=None, **kwargs):
        variables = variables or {}
        templar = self._templar

        def get(name):
            if name not in variables:
                raise KeyError(name)
            return templar.template(variables[name])

        inputs = preflight.Inputs(
            str(variables.get("inventory_hostname", "?")),
            get,
            lambda name: origin_of(variables.get(name)),
        )
        return preflight.check(list(terms), inputs)
