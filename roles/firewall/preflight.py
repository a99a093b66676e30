"""The firewall role's preflight checks: run by both deploy tools through
grimbots_infra.preflight.check (roles/platform/README.md, "A role's checks"). The rules
themselves are computed by grimbots_infra.firewall, which the template, the docs' test and the
lab's probe matrix share."""

from __future__ import annotations

from grimbots_infra import firewall
from grimbots_infra.preflight import Inputs


def check(inputs: Inputs) -> list[str]:
    return firewall.check(inputs)
