"""Phase 3 with pyinfra: common + haproxy on the lb host, as playbooks/phase3.yml.

    pyinfra -y --limit lb deploy/inventory.py deploy/phase3.py

Ordering and glue only: each role's manifest (roles/<role>/vars/main.yml) is applied by
grimbots_infra.apply, stage by stage as the role's tasks do; the stateful steps are the roles'
host-side helpers, which Ansible calls too (host_step: run when the helper's --check says so).
"""

from __future__ import annotations

import shlex

from pyinfra import host

from grimbots_infra import apply
from grimbots_infra.pyinfra_ops import host_step, host_vars

LB_ROLES = ("common", "haproxy")


def common(v) -> None:
    apply.install("common", v)
    apply.service("common", v, apply.configure("common", v))


def haproxy(v) -> None:
    apply.install("haproxy", v)
    extra = {}
    if v["haproxy_tls_selfsigned"]:
        args = shlex.join(
            [v["haproxy_tls_dir"], str(v["haproxy_tls_selfsigned_days"]), *v["haproxy_tls_names"]]
        )
        helper = f"{v['haproxy_lib_dir']}/haproxy-selfsigned-cert"
        op = host_step(
            name="Make the lab CA and a certificate signed by it, when none is valid for the names",
            command=f"{helper} {args}",
            check=f"{helper} --check {args}",
        )
        extra["reload-haproxy"] = [op]
    apply.service("haproxy", v, apply.configure("haproxy", v), extra)


if "lb" in host.groups:
    _v = host_vars(LB_ROLES)
    common(_v)
    haproxy(_v)
