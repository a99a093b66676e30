"""Which roles the phases apply, said once per tool: the plays of each phase's playbook (read
here for the playbook's preflight) and the role lists of each pyinfra deploy. ALL_ROLES: every
role a deploy may apply, whose defaults the inventory loader layers under every host's variables
(lowest precedence), derived from the folders under roles/ (grimbots_infra.roles)."""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Iterator, Mapping
from pathlib import Path
from typing import Any

import yaml

from grimbots_infra import roles
from grimbots_infra.inventory import PLAYBOOKS_DIR

ALL_ROLES = roles.names()


def plays(playbook: Path) -> Iterator[dict[str, Any]]:
    """The plays of a playbook, those of the playbooks it imports in their place."""
    for play in yaml.safe_load(playbook.read_text()) or []:
        imported = play.get("ansible.builtin.import_playbook")
        if imported:
            yield from plays(playbook.parent / imported)
        else:
            yield play


def _ended(play: Mapping[str, Any], ends_host: Callable[[str], bool]) -> bool:
    """Whether the play's pre_tasks end this host (``meta: end_host`` whose ``when`` holds)."""
    for task in play.get("pre_tasks") or []:
        if task.get("ansible.builtin.meta") == "end_host":
            when = task.get("when", True)
            conditions = when if isinstance(when, list) else [when]
            if all(c is True or ends_host(str(c)) for c in conditions):
                return True
    return False


def _applies(entry: str | Mapping[str, Any], holds: Callable[[str], bool]) -> bool:
    """Whether a play's role entry applies to the host: its ``when`` (all of a list) holds."""
    when = entry.get("when", True) if isinstance(entry, Mapping) else True
    conditions = when if isinstance(when, list) else [when]
    return all(c is True or holds(str(c)) for c in conditions)


def playbook_roles(
    phase: int, group_names: Iterable[str], ends_host: Callable[[str], bool]
) -> list[str]:
    """The roles playbooks/phase<phase>.yml applies to a host in ``group_names``, in order: what
    its first play checks before any host changes (the playbook's plays say it once). A play
    whose pre_tasks end the host applies nothing to it, nor does a role whose ``when`` does not
    hold (``ends_host`` evaluates a ``when`` for the host)."""
    groups = {"all", *group_names}
    found: list[str] = []
    for play in plays(PLAYBOOKS_DIR / f"phase{phase}.yml"):
        patterns = set(re.split(r"[:,]", str(play.get("hosts", ""))))
        if not play.get("roles") or not patterns & groups or _ended(play, ends_host):
            continue
        for entry in play["roles"]:
            role = entry if isinstance(entry, str) else str(entry["role"])
            if role not in found and _applies(entry, ends_host):
                found.append(role)
    return found


def host_roles(phase: int, group_names: Iterable[str], templar: Any) -> list[str]:
    """playbook_roles for one host, a play's ``when`` evaluated by Ansible's Templar bound to
    that host's variables (the lookup plugin's, or grimbots_infra.inventory.HostVars.templar)."""
    from ansible.template import trust_as_template

    return playbook_roles(
        phase,
        group_names,
        lambda when: bool(templar.evaluate_conditional(trust_as_template(when))),
    )


def preflight_plays(phase: int) -> list[tuple[int, list[str]]]:
    """(phase, groups) of each preflight play (the first play of playbooks/phase<phase>.yml and
    of each phase playbook it imports), in the order Ansible runs them."""
    out = []
    for play in yaml.safe_load((PLAYBOOKS_DIR / f"phase{phase}.yml").read_text()) or []:
        imported = play.get("ansible.builtin.import_playbook")
        number = re.fullmatch(r"phase([0-9]+)\.yml", str(imported or ""))
        if number:
            out += preflight_plays(int(number.group(1)))
        elif "preflight" in (play.get("tags") or []):
            out.append((phase, [g for g in re.split(r"[:,]", str(play["hosts"])) if g]))
    return out
