"""The common role's preflight checks: run by both deploy tools through
grimbots_infra.preflight.check (roles/platform/README.md, "A role's checks")."""

from __future__ import annotations

from grimbots_infra.preflight import Inputs, vault_password


def check(inputs: Inputs) -> list[str]:
    out = []
    for item in inputs.get("common_sysctl", []):
        if not str(item.get("name", "")) or not str(item.get("value", "")):
            out.append(
                inputs.problem("common_sysctl", f"each entry needs a name and a value: {item}")
            )
    if int(inputs["common_nofile_limit"]) < 4096:
        out.append(inputs.problem("common_nofile_limit", "must be at least 4096"))
    out += vault_password(inputs, "common_tls_key_passphrase")
    days, renew = int(inputs["common_tls_days"]), int(inputs["common_tls_renew_days"])
    if not 0 < renew < days:
        out.append(
            inputs.problem(
                "common_tls_renew_days",
                f"must be above 0 and below common_tls_days ({days}): a rerun renews the "
                "host's certificate that many days before it expires",
            )
        )
    return out
