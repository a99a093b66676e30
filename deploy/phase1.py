"""Phase 1 with pyinfra: roles common + firewall + app on the first app host (every app host from
platform_phase 3), as playbooks/phase1.yml.

    pyinfra -y --limit app deploy/inventory.py deploy/phase1.py

Ordering only: each role is applied by grimbots_infra.apply.role (its manifest, stage by stage
as the role's tasks do, or its roles/<role>/pyinfra_steps.py where it has host steps besides).
Variables come from ansible-core (grimbots_infra), after the shared preflight checks.
"""

from __future__ import annotations

from pyinfra import host

from grimbots_infra import apply
from grimbots_infra.pyinfra_ops import host_vars, require_phase

ROLES = ("common", "firewall", "app")

if "app" in host.groups:
    require_phase(1)
    variables = host_vars(ROLES)
    if int(variables["platform_phase"]) >= 3 or host.name == variables["platform_first_app_host"]:
        apply.role("common", variables)
        apply.role("firewall", variables)
        if host.name in variables["platform_front_door"]:  # phases 1-2: TLS on this host
            apply.role("haproxy", host_vars(("common", "haproxy")))
        apply.role("app", variables)
