"""One app host at a time with pyinfra, drained in HAProxy first (deploy/app_update.py; Ansible:
playbooks/app-update.yml with serial: 1).

pyinfra runs one operation at a time on every host that has it, in an order it derives from
each host's sequence of operations. Every host of the run calls the same barriers in each turn,
so one turn's operations (the load balancers' drain, the target's update, the load balancers'
ready) all run before the next turn's first one: the order of turns is the order of hosts."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

from pyinfra import host
from pyinfra.operations import server

from grimbots_infra.pyinfra_ops import barrier


def server_state(lb_variables: Any, backend: str, action: str, target: str) -> None:
    """On a load balancer: drain ``target`` in ``backend`` (wait until its sessions end, bounded)
    or put it back (wait until HAProxy's checks report it UP), with the haproxy role's
    haproxy-server-state helper."""
    timeout = lb_variables[f"haproxy_{'drain' if action == 'drain' else 'ready'}_timeout"]
    server.shell(
        name=f"{action.capitalize()} {target} in HAProxy through its runtime API",
        commands=[
            f"{lb_variables['haproxy_lib_dir']}/haproxy-server-state "
            f"{lb_variables['haproxy_socket']} {action} {backend} {target} {timeout}"
        ],
    )


def turns(
    targets: Sequence[str],
    update: Callable[[], None],
    lb_variables: Any | None,
    backend: str,
) -> None:
    """For each target in order: drain it in HAProxy's ``backend`` on this host when this is a
    load balancer (``lb_variables`` given), ``update()`` when this host is the target, put it
    back; every host of the run passes the same barriers, so each turn ends before the next."""
    for position, target in enumerate(targets):
        host.loop_position.append(position)
        try:
            barrier(name=f"{target}'s turn: every host is here")
            if lb_variables is not None:
                server_state(lb_variables, backend, "drain", target)
            barrier(name=f"{target} is drained")
            if host.name == target:
                update()
            barrier(name=f"{target} is updated and ready")
            if lb_variables is not None:
                server_state(lb_variables, backend, "ready", target)
            barrier(name=f"{target} is back in HAProxy")
        finally:
            host.loop_position.pop()
