"""A role's manifest applied with pyinfra's typed operations.

roles/<role>/vars/main.yml declares ``<role>_manifest``: packages, kernel settings, system users,
directories, helper files, templates (destination, owner, mode, validator, what a change
triggers), the actions changes trigger and the units' state. The role's tasks loop over it
through roles/platform/tasks/{install,configure,service}.yml; these three functions apply the
same data, stage by stage and in the same order, so neither tool re-describes a role.
"""

from __future__ import annotations

import io
import shlex
from collections import defaultdict
from pathlib import Path
from typing import Any

from pyinfra import host
from pyinfra.api import operation
from pyinfra.api.operation import OperationMeta
from pyinfra.facts.files import File, Sha1File
from pyinfra.operations import apt, files, server, systemd
from pyinfra.operations.util import any_changed

from grimbots_infra.inventory import ROLES_DIR
from grimbots_infra.render import render, sha1

Triggers = dict[str, list[OperationMeta]]


def manifest(role: str, variables: Any) -> dict[str, Any]:
    return variables[f"{role}_manifest"]


def _on(item: dict[str, Any]) -> bool:
    return bool(item.get("when", True))


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
def put_if_absent(text: str, dest: str, user: str, group: str, mode: str):
    """files.put of a rendered template only when ``dest`` does not exist (Ansible's
    ``force: false``): for a file the service rewrites itself (Sentinel's), which the template
    only seeds. An existing file is left exactly as it is, owner and mode included."""
    if host.get_fact(File, path=dest):
        return
    yield from files.put._inner(src=io.StringIO(text), dest=dest, user=user, group=group, mode=mode)


def _put_role_file(role: str, f: dict, verb: str):
    """files.put of one of the role's files/ (a manifest's preseed or files entry)."""
    return files.put(
        name=f"{verb} {f['dest']}",
        src=str(ROLES_DIR / role / "files" / f["src"]),
        dest=f["dest"],
        user=f["owner"],
        group=f["group"],
        mode=f["mode"],
    )


def install(role: str, variables: Any) -> Triggers:
    """Preseeded files, packages, kernel settings, system users, directories, helper files;
    returns action name -> the helper files whose change triggers it (pass it to ``service``
    as ``extra``)."""
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
        files.directory(
            name=f"Create {d['path']}", path=d["path"], user=d["owner"], group=d["group"],
            mode=d["mode"],
        )  # fmt: skip
    for f in filter(_on, m.get("files", [])):
        op = _put_role_file(role, f, "Install")
        for action in f.get("on_change", []):
            triggers[action].append(op)
    return triggers


def configure(role: str, variables: Any) -> Triggers:
    """Every template, rendered by Ansible's Templar; returns action name -> the operations whose
    change triggers it."""
    triggers: Triggers = defaultdict(list)
    for t in filter(_on, manifest(role, variables).get("templates", [])):
        text = render(role, t["src"], variables)
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
    """What the changes triggered (daemon reload, unit restarts and reloads, commands, in the
    manifest's order), then every unit in its state."""
    m = manifest(role, variables)
    merged: Triggers = defaultdict(list)
    for source in (triggers, extra or {}):
        for action, ops in source.items():
            merged[action].extend(ops)
    actions = [a for a in m.get("actions", []) if _on(a) and merged.get(a["name"])]
    for a in (a for a in actions if a.get("daemon_reload")):
        systemd.daemon_reload(name="Reload systemd units", _if=any_changed(*merged[a["name"]]))
    for a in (a for a in actions if a.get("units")):
        for unit in a["units"]:
            name = f"{a['state'].capitalize()} {unit} ({a['name']})"
            when = {"_if": any_changed(*merged[a["name"]]), "_serial": bool(a.get("serial"))}
            if a.get("no_block"):  # systemd.service has no --no-block
                verb = {"restarted": "restart", "reloaded": "reload"}[a["state"]]
                server.shell(name=name, commands=[f"systemctl {verb} --no-block {unit}"], **when)
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
            name=f"Run {a['name']}",
            commands=[shlex.join(a["command"])],
            _if=any_changed(*merged[a["name"]]),
        )
    for u in filter(_on, m.get("units", [])):
        for unit in u["names"]:
            state = u.get("state")
            systemd.service(
                name=f"Put {unit} in its state ({state or 'as is'}, enabled={u.get('enabled')})",
                service=unit,
                running=None if state is None else state == "started",
                enabled=u.get("enabled"),
            )
