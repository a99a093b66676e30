"""The front door with pyinfra: the haproxy role's stages and helpers, in the order its tasks run
them (roles/haproxy/tasks/main.yml). Phase 1's deploy runs it on the first app host in phases
1-2, phase 3's on the lb hosts (platform_front_door), through grimbots_infra.apply.role."""

from __future__ import annotations

import shlex
from typing import Any

from grimbots_infra import apply
from grimbots_infra.pyinfra_ops import due, host_step


def _helper(variables: dict[str, Any], name: str, args: list[str], what: str, due_now, extra):
    joined = shlex.join(args)
    helper = f"{variables['haproxy_lib_dir']}/{name}"
    if due(f"{helper} --check {joined}"):
        due_now.append("reload-haproxy")
    op = host_step(name=what, command=f"{helper} {joined}", check=f"{helper} --check {joined}")
    extra.setdefault("reload-haproxy", []).append(op)


def apply_role(variables: dict[str, Any]) -> None:
    """Install, the lab or first-boot certificate, configure, service, then ACME issuance."""
    apply.install("haproxy", variables)
    extra: dict[str, list] = {}
    due_now: list[str] = []
    if variables["haproxy_tls_selfsigned"]:
        args = [
            variables["haproxy_tls_dir"],
            str(variables["haproxy_tls_selfsigned_days"]),
            *variables["haproxy_tls_names"],
        ]
        what = "Make the lab CA and a certificate signed by it, when none is valid for the names"
        _helper(variables, "haproxy-selfsigned-cert", args, what, due_now, extra)
    if variables["haproxy_acme"] and not variables["haproxy_tls_certificate"]:
        name = ([*variables["haproxy_acme_domains"], variables["inventory_hostname"]])[0]
        what = "Give HAProxy a throwaway certificate for its first start until the ACME one"
        _helper(variables, "haproxy-bootstrap-cert", [variables["haproxy_tls_dir"], name],
                what, due_now, extra)  # fmt: skip
    apply.service("haproxy", variables, apply.configure("haproxy", variables, due_now), extra)
    if variables["haproxy_acme"]:
        helper = f"{variables['haproxy_lib_dir']}/haproxy-acme-cert"
        host_step(
            name="Obtain the certificate from the ACME CA over HTTP-01 (certbot.timer renews it)",
            command=helper,
            check=f"{helper} --check",
        )


def retire(variables: dict[str, Any]) -> None:
    """Stop and disable HAProxy and certbot.timer on a host the front door has left, as
    roles/haproxy/tasks/retire.yml (deploy/phase3.py, on the app hosts from phase 3)."""
    host_step(
        name="Stop and disable HAProxy and certbot's renewal, the front door having moved to lb",
        command=variables["haproxy__retire"],
        check=variables["haproxy__retire_check"],
    )
