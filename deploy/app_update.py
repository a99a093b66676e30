"""Update the app with pyinfra, one app host at a time, as playbooks/app-update.yml does
(docs/operations.md, "Update the app"):

    pyinfra -y --limit lb --limit app deploy/inventory.py deploy/app_update.py

From phase 3, in each host's turn (grimbots_infra.rolling.turns): the lb hosts drain it in HAProxy
(runtime API; until its sessions end, bounded), its workers stop warm (the current job finishes),
the app role runs as the phase deploys run it (roles/app/pyinfra_steps.py: the wheel set, the
configuration, the expand-only migrations, the units), /health/ready answers 200 on it, the lb
hosts put it back and see it UP; then the next host. In phases 1-2 (the front door on the only
app host) there is nothing to drain: the workers stop warm, Gunicorn re-forks on SIGHUP, and no
zero-downtime figure was measured.
"""

from __future__ import annotations

from pyinfra import config, host
from pyinfra.operations import server

from grimbots_infra import apply, rolling
from grimbots_infra.inventory import load
from grimbots_infra.phases import ALL_ROLES
from grimbots_infra.pyinfra_ops import host_vars, inventory_var, require_phase, wait

UPDATED_ROLES = ("app",)  # its preflight checks run first; the lb hosts' ran with phase 3

require_phase(1)
# A failed host stops the whole update (Ansible's max_fail_percentage: 0): a lb host that failed
# would otherwise drop out, and the next hosts be updated without a drain.
config.FAIL_PERCENT = 0
groups = load(ALL_ROLES).groups
phase = int(inventory_var("platform_phase"))
lb_hosts = groups.get("lb", []) if phase >= 3 else []
# Until phase 3 the app runs on the first app host only.
targets = groups.get("app", []) if phase >= 3 else groups.get("app", [])[:1]


def update_this_host(variables) -> None:
    lib, units = variables["platform_lib_dir"], list(variables["app_worker_units"])
    server.shell(
        name="Stop the workers, each finishing its current job (warm shutdown)",
        commands=[f"systemctl stop {' '.join(units)}"],
    )
    apply.role("app", variables)
    # Stopped above: started here whether or not the role restarted them (nothing new to install).
    server.shell(name="Start the workers", commands=[f"systemctl start {' '.join(units)}"])
    wait(
        name="Wait until /health/ready answers 200 on this host",
        command=f"{lib}/grimbots-wait-health {variables['grimbots_health_timeout']} "
        f"http://127.0.0.1:{variables['grimbots_web_port']}/health/ready",
    )


if host.name in targets or host.name in lb_hosts:
    app_variables = host_vars(UPDATED_ROLES) if host.name in targets else None
    lb_variables = host_vars(()) if host.name in lb_hosts else None
    # HAProxy's backend of the app hosts (roles/haproxy/templates/haproxy.cfg.j2).
    rolling.turns(targets, lambda: update_this_host(app_variables), lb_variables, "app")
