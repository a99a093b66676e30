"""pyinfra operations shared by the deploys: host-side steps, waits, barriers, facts, variables."""

from __future__ import annotations

import json
from typing import Any

from pyinfra import host, state
from pyinfra.api import operation
from pyinfra.api.exceptions import OperationError
from pyinfra.facts.server import Command

from grimbots_infra import preflight
from grimbots_infra.inventory import HostVars, load
from grimbots_infra.phases import ALL_ROLES
from grimbots_infra.roles import module as roles_module


def fact(command: str) -> str:
    """A shell command's output on the current host, stripped ("" when it printed nothing:
    pyinfra's Command fact is None then, as on an empty host)."""
    return (host.get_fact(Command, f"{command} 2>/dev/null || true") or "").strip()


@operation()
def host_step(command: str, check: str):
    """Run a host-side helper when ``check`` (its --check form: exit 0 = nothing due) says so.

    Decided when the operation executes, not when pyinfra prepares: on empty hosts the helper and
    what it depends on (a cluster leader, a database) exist only once earlier operations ran.
    """
    status = host.get_fact(Command, f"{check} >/dev/null 2>&1; echo $?")
    if (status or "").strip() != "0":
        yield command


def due(check: str) -> bool:
    """Whether a host-side helper's ``check`` (its --check form) says it has work to do, asked
    while pyinfra prepares (a helper not installed yet counts as due): what the step will trigger
    is recorded on the host before the step runs (grimbots_infra.apply.record)."""
    return fact(f"{check} >/dev/null 2>&1 && echo nothing-due") != "nothing-due"


@operation()
def barrier():
    """Change nothing. Called by every host of a run at the same line, it is one operation in
    pyinfra's graph, so what each host does after it runs only once every host got there (the
    app hosts' move after the db hosts' cluster)."""
    yield from ()


@operation()
def wait(command: str):
    """A readiness wait: a host-side helper that exits 0 once ready, run when the operation
    executes (at prepare time the helper may not be installed yet). Never a change; a failed
    wait fails the operation."""
    if not state.is_executing:
        return
    status = (host.get_fact(Command, f"{command} >/dev/null 2>&1; echo $?") or "").strip()
    if status != "0":
        raise OperationError(f"{command} exited {status or '?'}")
    yield from ()


CONTAINERS = {"docker", "container", "containerd", "podman", "lxc", "openvz", "systemd-nspawn"}


def extra_vars() -> dict[str, Any]:
    """Variables given on the command line, over every inventory value (Ansible's ``-e``):
    ``pyinfra --data grimbots_extra_vars='{"name": value}' ...``."""
    given = host.data.get("grimbots_extra_vars") or {}
    return json.loads(given) if isinstance(given, str) else dict(given)


def host_vars(roles: tuple[str, ...], play_vars: dict[str, Any] | None = None) -> HostVars:
    """This host's variables for the roles (as the phase's play sees them), with the host facts
    the manifests read and what each role's ``pyinfra_steps.state()`` reads before anything
    changes (its tasks/state.yml), after the shared preflight checks passed (else nothing runs
    anywhere)."""
    virt = fact("systemd-detect-virt --container")
    before: dict[str, Any] = {}
    for role in roles:
        steps = roles_module(role, "pyinfra_steps")
        if steps is not None and hasattr(steps, "state"):
            before.update(steps.state())
    extra = {
        "platform_in_container": virt in CONTAINERS,
        **before,
        **(play_vars or {}),
        **extra_vars(),
    }
    variables = load(ALL_ROLES).vars(host.name, extra)
    problems = preflight.check(roles, preflight.from_host_vars(variables))
    if problems:
        raise preflight.PreflightError("\n".join(problems))
    return variables


def inventory_var(name: str) -> Any:
    """One of this host's variables, before host_vars (which also runs the preflight checks)."""
    return load(ALL_ROLES).vars(host.name, extra_vars() or None)[name]


def require_phase(minimum: int) -> None:
    """Refuse (as the playbook's first play does, with the same check) an inventory whose
    platform_phase is not one of 1-4 or is below ``minimum``: every role derives that phase's
    settings from it."""
    variables = load(ALL_ROLES).vars(host.name, extra_vars() or None)
    problems = preflight.check([f"phase{minimum}"], preflight.from_host_vars(variables))
    if problems:
        raise preflight.PreflightError("\n".join(problems))
