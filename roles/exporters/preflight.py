"""The exporters role's preflight checks: run by both deploy tools through
grimbots_infra.preflight.check (roles/platform/README.md, "A role's checks")."""

from __future__ import annotations

from grimbots_infra import guards
from grimbots_infra.preflight import Inputs, vault_password


def check(inputs: Inputs) -> list[str]:
    out = []
    if inputs.host in inputs["groups"].get(inputs["exporters_postgres_group"], []):
        out += vault_password(inputs, "exporters_postgres_password")
    if inputs.host in inputs["groups"].get(inputs["exporters_redis_group"], []):
        out += guards.secrets(inputs, ["exporters_redis_password"])
    return out + guards.own_private(inputs, "exporters_address")
