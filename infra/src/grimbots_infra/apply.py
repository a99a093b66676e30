"""A role's manifest applied with pyinfra's typed operations.

roles/<role>/vars/main.yml declares ``<role>_manifest``: packages, kernel settings, system users,
directories, helper files, templates (destination, owner, mode, validator, what a change
triggers), the actions changes trigger and the units' state. The role's tasks loop over it
through roles/platform/tasks/{install,configure,service}.yml; these three functions apply the
same data, stage by stage and in the same order, so neither tool re-describes a role.

What a change triggers is recorded on the host (the platform's pending-actions file, which
Ansible reads as a local fact) before the change is made, and cleared once the service stage
ran it: a run that fails in between restarts on the next run, with either tool.
"""

from __future__ import annotations

import hashlib
import io
import json
import shlex
from collections import defaultdict
from pathlib import Path
from typing import Any

from pyinfra import host
from pyinfra.api import operation
from pyinfra.api.operation import OperationMeta
from pyinfra.facts.files import Directory, File, FileContents, Sha1File
from pyinfra.facts.systemd import SystemdStatus
from pyinfra.operations import apt, files, server, systemd
from pyinfra.operations.util.files import ensure_mode_int

from grimbots_infra import roles
from grimbots_infra.inventory import role_dir
from grimbots_infra.render import render, sha1

Triggers = dict[str, list[OperationMeta]]


def manifest(role: str, variables: Any) -> dict[str, Any]:
    return variables[f"{role}_manifest"]


def _on(item: dict[str, Any]) -> bool:
    return bool(item.get("when", True))


# Per host: the pending actions as the host's file holds them when the run starts, and as the
# operations planned so far leave it (every write below is planned unconditionally, in order).
_AT_START: dict[str, dict[str, list[str]]] = {}
_PLANNED: dict[str, dict[str, list[str]]] = {}


def _pending_file(variables: Any) -> str:
    directory = variables["platform_pending_actions_dir"]
    return f"{directory}/{variables['platform_pending_actions_name']}.fact"


def pending_at_start(variables: Any) -> dict[str, list[str]]:
    """The actions a change triggered and no run has done yet, per role, as this host recorded
    them before this run (a failed run's restarts)."""
    if host.name not in _AT_START:
        lines = host.get_fact(FileContents, path=_pending_file(variables))
        _AT_START[host.name] = json.loads("\n".join(lines)) if lines else {}
        _PLANNED[host.name] = {k: list(v) for k, v in _AT_START[host.name].items()}
    return _AT_START[host.name]


def _write_pending(variables: Any, name: str) -> None:
    files.put(
        name=name,
        src=io.StringIO(json.dumps(_PLANNED[host.name], indent=4, sort_keys=True) + "\n"),
        dest=_pending_file(variables),
        user="root",
        group="root",
        mode="0644",
    )


def record(role: str, variables: Any, actions: list[str]) -> None:
    """Record ``actions`` as pending for ``role`` before the changes that trigger them run."""
    pending_at_start(variables)
    known = _PLANNED[host.name].get(role, [])
    new = [a for a in dict.fromkeys(actions) if a not in known]
    if new:
        _PLANNED[host.name][role] = known + new
        _write_pending(variables, f"Record what the changes of {role} trigger: {', '.join(new)}")


def _clear(role: str, variables: Any) -> None:
    if role in _PLANNED[host.name]:
        del _PLANNED[host.name][role]
        _write_pending(variables, f"Clear the actions of {role} that ran")


def _differs(dest: str, digest: str, item: dict[str, Any]) -> bool:
    """Whether writing content of sha1 ``digest`` with the item's owner, group and mode to
    ``dest`` changes the host (decided before the write, from facts)."""
    info = host.get_fact(File, path=dest)
    if not info:
        return True
    wanted = (item["owner"], item["group"], ensure_mode_int(item["mode"]))
    return (info["user"], info["group"], info["mode"]) != wanted or host.get_fact(
        Sha1File, path=dest
    ) != digest


@operation()
def validated_put(text: str, dest: str, user: str, group: str, mode: str, validate: str):
    """files.put of a rendered template, checked first: the new content goes to a staged file,
    the validator (``%s`` = that file) must pass, then it replaces ``dest`` (as Ansible's
    ``validate:`` does)."""
    if host.get_fact(Sha1File, path=dest) == sha1(text):
        yield from files.file._inner(path=dest, user=user, group=group, mode=mode)
        return
    staged = f"{dest}.pyinfra-new"
    yield from files.put._inner(
        src=io.StringIO(text), dest=staged, user=user, group=group, mode=mode
    )
    check = validate.replace("%s", shlex.quote(staged))
    yield (
        f"{{ {check} && mv -f {shlex.quote(staged)} {shlex.quote(dest)}; }} || "
        f"{{ rm -f {shlex.quote(staged)}; exit 1; }}"
    )


@operation()
def check_first(text: str, dest: str, user: str, group: str, mode: str, validate: str):
    """A validated template's new content staged next to ``dest`` and checked by its validator
    before what its change triggers is recorded: Ansible records only what landed, so a rejected
    template leaves nothing pending (validated_put then moves the staged file in place)."""
    if host.get_fact(Sha1File, path=dest) == sha1(text):
        return
    staged = f"{dest}.pyinfra-new"
    yield from files.put._inner(
        src=io.StringIO(text), dest=staged, user=user, group=group, mode=mode
    )
    check = validate.replace("%s", shlex.quote(staged))
    yield f"{check} || {{ rm -f {shlex.quote(staged)}; exit 1; }}"


@operation()
def put_if_absent(text: str, dest: str, user: str, group: str, mode: str):
    """files.put of a rendered template only when ``dest`` does not exist (Ansible's
    ``force: false``): for a file the service rewrites itself (Sentinel's), which the template
    only seeds. An existing file is left exactly as it is, owner and mode included."""
    if host.get_fact(File, path=dest):
        return
    yield from files.put._inner(src=io.StringIO(text), dest=dest, user=user, group=group, mode=mode)


@operation()
def directory(path: str, user: str, group: str, mode: str):
    """files.directory, its missing parents created with the same owner, group and mode, as
    Ansible's file module (state: directory) creates them (decided when the operation runs)."""
    missing = [path]
    parent = Path(path).parent
    while parent != parent.parent and not host.get_fact(Directory, path=str(parent)):
        missing.append(str(parent))
        parent = parent.parent
    for folder in reversed(missing):
        yield from files.directory._inner(path=folder, user=user, group=group, mode=mode)


@operation()
def without_waiting(unit: str, state: str):
    """systemctl with --no-block (a manifest's ``no_block``; systemd.service has no such flag), as
    Ansible's systemd_service decides: ``restarted`` always; ``reloaded`` reloads a running unit
    and starts a stopped one; ``started``/``stopped`` only when the unit is not so already."""
    service = unit if "." in unit else f"{unit}.service"
    running = host.get_fact(SystemdStatus, services=[service]).get(service)
    verb = {
        "restarted": "restart",
        "reloaded": "reload" if running else "start",
        "started": None if running else "start",
        "stopped": "stop" if running else None,
    }[state]
    if verb:
        yield f"systemctl {verb} --no-block {shlex.quote(service)}"


def _put_role_file(role: str, f: dict, verb: str):
    """files.put of one of the role's files/ (a manifest's preseed or files entry)."""
    return files.put(
        name=f"{verb} {f['dest']}",
        src=str(role_dir(role) / "files" / f["src"]),
        dest=f["dest"],
        user=f["owner"],
        group=f["group"],
        mode=f["mode"],
    )


def install(role: str, variables: Any) -> Triggers:
    """Preseeded files, apt repositories, packages, kernel settings, system users, directories,
    helper files; returns action name -> the helper files whose change triggers it (pass it to
    ``service`` as ``extra``)."""
    triggers: Triggers = defaultdict(list)
    m = manifest(role, variables)
    for f in m.get("preseed", []):
        files.directory(
            name=f"Create {Path(f['dest']).parent}",
            path=str(Path(f["dest"]).parent),
            user="root",
            group="root",
            mode="0755",
        )
        _put_role_file(role, f, "Preseed")
    for r in filter(_on, m.get("apt_repositories", [])):
        files.download(
            name=f"Fetch the signing key {r['key']}",
            src=r["key_url"],
            dest=r["key"],
            user="root",
            group="root",
            mode="0644",
        )
        files.put(
            name=f"Add the apt repository {r['dest']}, signed by {r['key']}",
            src=io.StringIO(render(role, r["src"], variables)),
            dest=r["dest"],
            user="root",
            group="root",
            mode="0644",
        )
    for p in filter(_on, m.get("packages", [])):
        update = bool(p.get("update_cache", False))
        apt.packages(
            name=f"Install the Debian packages of {role}: {' '.join(p['names'])}",
            packages=list(p["names"]),
            update=update,
            cache_time=int(p.get("cache_valid_time", 3600)) if update else None,
        )
    sysctl = m.get("sysctl") or {}
    for s in sysctl.get("settings", []):
        server.sysctl(
            name=f"Apply and persist {s['name']}",
            key=s["name"],
            value=str(s["value"]),
            persist=True,
            persist_file=sysctl["file"],
        )
    for u in m.get("users", []):
        server.group(name=f"Create the system group {u['name']}", group=u["name"], system=True)
        server.user(  # noqa: S604 - `shell` is the login shell, not a subprocess flag
            name=f"Create the system user {u['name']} without a login shell",
            user=u["name"],
            group=u["name"],
            home=u["home"],
            shell="/usr/sbin/nologin",
            system=True,
            ensure_home=False,
        )
    for d in filter(_on, m.get("directories", [])):
        directory(
            name=f"Create {d['path']}", path=d["path"], user=d["owner"], group=d["group"],
            mode=d["mode"],
        )  # fmt: skip
    role_files = list(filter(_on, m.get("files", [])))
    due = []
    for f in role_files:
        local = (role_dir(role) / "files" / f["src"]).read_bytes()
        digest = hashlib.sha1(local).hexdigest()  # noqa: S324 - a change marker, as pyinfra's
        if f.get("on_change") and _differs(f["dest"], digest, f):
            due += f["on_change"]
    record(role, variables, due)
    for f in role_files:
        op = _put_role_file(role, f, "Install")
        for action in f.get("on_change", []):
            triggers[action].append(op)
    return triggers


def configure(role: str, variables: Any, extra: list[str] | None = None) -> Triggers:
    """Every template, rendered by Ansible's Templar; returns action name -> the operations whose
    change triggers it. First, what the changing templates trigger, with ``extra`` (actions the
    role's own steps made due, e.g. a new wheel set), is recorded on the host."""
    triggers: Triggers = defaultdict(list)
    templates = [
        (t, render(role, t["src"], variables))
        for t in filter(_on, manifest(role, variables).get("templates", []))
    ]
    due = list(extra or [])
    for t, text in templates:
        if t.get("validate") and t.get("force", True):
            check_first(
                name=f"Check the new {t['dest']} before it lands", text=text, dest=t["dest"],
                user=t["owner"], group=t["group"], mode=t["mode"], validate=t["validate"],
            )  # fmt: skip
        if not t.get("on_change"):
            continue
        if t.get("force", True):
            changes = _differs(t["dest"], sha1(text), t)
        else:
            changes = not host.get_fact(File, path=t["dest"])
        if changes:
            due += t["on_change"]
    record(role, variables, due)
    for t, text in templates:
        common = {"user": t["owner"], "group": t["group"], "mode": t["mode"]}
        if not t.get("force", True):
            op = put_if_absent(
                name=f"Render {t['src']} to {t['dest']} (only when absent)",
                text=text,
                dest=t["dest"],
                **common,
            )
        elif t.get("validate"):
            op = validated_put(
                name=f"Render {t['src']} to {t['dest']} (checked first)",
                text=text,
                dest=t["dest"],
                validate=t["validate"],
                **common,
            )
        else:
            op = files.put(
                name=f"Render {t['src']} to {t['dest']}",
                src=io.StringIO(text),
                dest=t["dest"],
                **common,
            )
        for action in t.get("on_change", []):
            triggers[action].append(op)
    return triggers


def service(role: str, variables: Any, triggers: Triggers, extra: Triggers | None = None) -> None:
    """The actions pending for the role (what this run's changes triggered, and what a failed run
    left recorded on the host) in roles/platform/tasks/service.yml's order: one daemon reload,
    the units restarted or reloaded in the manifest's order (the serial ones, one host at a time,
    after the others), the commands; then every unit in its state; then the role's pending
    actions are cleared."""
    m = manifest(role, variables)
    if variables["platform_fail_before_service"] == role:
        server.shell(
            name=f"Stop here, before the service stage of {role} (platform_fail_before_service)",
            commands=[f"echo 'platform_fail_before_service is {role}' >&2; exit 1"],
        )
        return
    merged: Triggers = defaultdict(list)
    for source in (triggers, extra or {}):
        for action, ops in source.items():
            merged[action].extend(ops)
    left = pending_at_start(variables).get(role, [])
    actions = [
        a for a in m.get("actions", []) if _on(a) and (merged.get(a["name"]) or a["name"] in left)
    ]

    def due(*names: str):
        ops = [op for name in names for op in merged.get(name, [])]
        return lambda: any(name in left for name in names) or any(op.did_change() for op in ops)

    reloads = [a["name"] for a in actions if a.get("daemon_reload")]
    if reloads:
        systemd.daemon_reload(name="Reload systemd units", _if=due(*reloads))
    units = [a for a in actions if a.get("units")]
    for a in [a for a in units if not a.get("serial")] + [a for a in units if a.get("serial")]:
        for unit in a["units"]:
            name = f"{a['state'].capitalize()} {unit} ({a['name']})"
            when = {"_if": due(a["name"]), "_serial": bool(a.get("serial"))}
            if a.get("no_block"):
                without_waiting(name=name, unit=unit, state=a["state"], **when)
            else:
                systemd.service(
                    name=name,
                    service=unit,
                    running=True,
                    restarted=a["state"] == "restarted",
                    reloaded=a["state"] == "reloaded",
                    **when,
                )
    for a in (a for a in actions if a.get("command")):
        server.shell(
            name=f"Run {a['name']}", commands=[shlex.join(a["command"])], _if=due(a["name"])
        )
    for u in filter(_on, m.get("units", [])):
        for unit in u["names"]:
            state, enabled = u.get("state"), u.get("enabled")
            label = f"{unit} ({state or 'as is'}, enabled={enabled})"
            # As Ansible's systemd_service: enabled (or disabled) first, then started or stopped.
            if enabled is not None:
                systemd.service(name=f"Enable {label}", service=unit, running=None, enabled=enabled)
            if state and u.get("no_block"):
                without_waiting(name=f"Put {label} in its state without waiting", unit=unit,
                                state=state)  # fmt: skip
            elif state:
                systemd.service(name=f"Put {label} in its state", service=unit,
                                running=state == "started")  # fmt: skip
    _clear(role, variables)


def role(name: str, variables: Any) -> None:
    """One role with pyinfra, as its tasks/main.yml runs it: ``roles/<name>/pyinfra_steps.py``'s
    ``apply_role(variables)`` where the role has host steps besides its manifest, else the
    manifest's three stages. A deploy calls this and keeps only the order of roles and hosts.

    Deploys call this in a loop whose role list differs between hosts (the monitoring host
    applies common before firewall, the others start at firewall). pyinfra names an operation
    by its call-stack lines, so without a mark one role's operations would be named by their
    position in that loop and differ between hosts: a cycle in pyinfra's ordering graph. The
    role's place in the roles/ folder is that mark, the same on every host."""
    host.loop_position.append(_role_position(name))
    try:
        steps = roles.module(name, "pyinfra_steps")
        if steps is not None:
            steps.apply_role(variables)
            return
        installed = install(name, variables)
        service(name, variables, configure(name, variables), installed)
    finally:
        host.loop_position.pop()


def _role_position(name: str) -> int:
    return roles.names().index(name)
