"""A role is one folder: adding one touches, outside roles/<role>/, its molecule scenario and its
phase's suite, at most two files (the phase's playbook and its pyinfra deploy).

Computed from the structure: for every role, the files of the deploy machinery (playbooks,
deploys, grimbots_infra, the platform role) that name it as a role: a play's or an include's
role, a loop of roles, a string in a deploy's call or role list, a string, a key or a function
of grimbots_infra or the platform's plugins. Comments and docstrings do not count; neither do
other roles (a role may read another's variables), the inventories (data), the tests, the docs
and the CI scripts, nor an operation named after the role (playbooks/app-update.yml and
deploy/app_update.py for app): it operates a role once added, adding one does not take it. A
phase whose playbook and deploy both apply the role is one of its phases:
a new role is added to one phase (two files); a role applied in several (common) is counted as
added to one of them, every other file naming it is counted as a file it takes. A new role takes
what the most-registered existing role takes.
"""

from __future__ import annotations

import ast
import os
import re
from pathlib import Path

import yaml

from grimbots_infra.phases import playbook_roles
from grimbots_infra.roles import names

ROOT = Path(os.environ.get("GRIMBOTS_ROLE_COUNT_ROOT") or Path(__file__).resolve().parents[2])
MOST = 2
MACHINERY_PY = ("deploy", "infra/src", "roles/platform")
# A deploy names a role where it applies one, checks one or lists the roles it applies.
DEPLOY_CALLS = re.compile(
    r"^(install|configure|service|host_vars|check|role_vars|apply_role|role|pyinfra_steps)$"
)


def _playbook_roles(node) -> set[str]:
    """Role names a playbook's YAML names as roles: roles:, include/import_role, role loops."""
    found: set[str] = set()
    if isinstance(node, list):
        for item in node:
            found |= _playbook_roles(item)
    elif isinstance(node, dict):
        for key, value in node.items():
            if key == "roles":
                found |= {r if isinstance(r, str) else str(r.get("role")) for r in value or []}
            elif key in ("ansible.builtin.include_role", "ansible.builtin.import_role"):
                found.add(str(value.get("name")))
                loop = node.get("loop")
                if isinstance(loop, list):
                    found |= {str(item) for item in loop}
            else:
                found |= _playbook_roles(value)
    return found


def _docstrings(tree: ast.AST) -> set[int]:
    nodes = [tree, *(n for n in ast.walk(tree) if isinstance(n, ast.FunctionDef | ast.ClassDef))]
    return {
        id(n.body[0].value)
        for n in nodes
        if n.body and isinstance(n.body[0], ast.Expr) and isinstance(n.body[0].value, ast.Constant)
    }


def _python_roles(path: Path, roles: set[str]) -> set[str]:
    """Roles a Python file of the machinery names (not in a comment or a docstring); in a deploy
    only within a call that applies or checks a role, or a tuple named *ROLES*."""
    tree = ast.parse(path.read_text())
    found = {n.name for n in ast.walk(tree) if isinstance(n, ast.FunctionDef)} & roles
    skip = _docstrings(tree)
    scopes: list[ast.AST] = [tree]
    if path.parent.name == "deploy":
        found = set()
        scopes = [
            n
            for n in ast.walk(tree)
            if (
                isinstance(n, ast.Call)
                and DEPLOY_CALLS.match(getattr(n.func, "attr", getattr(n.func, "id", "")))
            )
            or (
                isinstance(n, ast.Assign)
                and any("ROLES" in getattr(t, "id", "") for t in n.targets)
            )
        ]
    for scope in scopes:
        for n in ast.walk(scope):
            if isinstance(n, ast.Constant) and n.value in roles and id(n) not in skip:
                found.add(n.value)
    return found


def _operation_of(path: Path, role: str) -> bool:
    """An operation's playbook or deploy named after the role (app-update.yml, app_update.py)."""
    return (
        path.parent.name in ("playbooks", "deploy")
        and re.match(rf"{re.escape(role)}[-_]", path.stem) is not None
    )


def registrations(root: Path, roles: set[str]) -> dict[str, list[str]]:
    """For each role, the machinery's files outside its folder that name it as a role."""
    where: dict[str, list[str]] = {r: [] for r in roles}
    files = sorted((root / "playbooks").glob("*.yml"))
    for folder in MACHINERY_PY:
        files += sorted(p for p in (root / folder).rglob("*.py") if "/tests/" not in str(p))
    for path in files:
        named = (
            _playbook_roles(yaml.safe_load(path.read_text()))
            if path.suffix == ".yml"
            else _python_roles(path, roles)
        )
        for role in sorted(named & roles):
            if not _operation_of(path, role):
                where[role].append(str(path.relative_to(root)))
    return where


def touched(named_in: list[str]) -> list[str]:
    """The files adding the role takes: one phase's playbook and deploy (the first phase whose
    playbook and deploy both apply it), and every file that names it besides its phases'."""
    phases = [
        n
        for n in range(1, 10)
        if f"playbooks/phase{n}.yml" in named_in and f"deploy/phase{n}.py" in named_in
    ]
    own = {f"playbooks/phase{n}.yml" for n in phases} | {f"deploy/phase{n}.py" for n in phases}
    first = [f"playbooks/phase{phases[0]}.yml", f"deploy/phase{phases[0]}.py"] if phases else []
    return first + [f for f in named_in if f not in own]


def test_adding_a_role_touches_at_most_two_files_outside_its_folder():
    roles = set(names(ROOT / "roles"))
    where = {role: touched(files) for role, files in registrations(ROOT, roles).items()}
    for role in sorted(where):
        print(f"{role}: {len(where[role])} files outside roles/{role}/: {', '.join(where[role])}")
    worst = max(sorted(where), key=lambda r: len(where[r]))
    count = len(where[worst])
    print(
        f"adding a role touches {count} files outside its folder: {', '.join(where[worst])} "
        f"(as {worst} does), besides molecule/<role>/ and its phase's suite"
    )
    assert count <= MOST, f"{worst} is named in {count} files outside its folder: {where[worst]}"


# What a deploy may call besides pyinfra's host and local: ordering, never a role's own step.
DEPLOY_OPS = {"barrier", "host_vars", "require_phase"}


def _deploy_steps(path: Path) -> list[str]:
    """What a deploy does that belongs to a role: an operation or fact imported from pyinfra or
    grimbots_infra.pyinfra_ops (other than the ordering ones), a manifest stage called directly
    (``apply.install``...) instead of ``apply.role``, a derived value computed (derive)."""
    found = []
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module:
            names = {alias.name for alias in node.names}
            if node.module.startswith(("pyinfra.operations", "pyinfra.facts")):
                found.append(f"imports {node.module}")
            elif node.module == "grimbots_infra.pyinfra_ops" and names - DEPLOY_OPS:
                found.append(f"imports {sorted(names - DEPLOY_OPS)} from {node.module}")
            elif node.module == "grimbots_infra" and "derive" in names:
                found.append("imports grimbots_infra.derive")
        elif (
            isinstance(node, ast.Attribute)
            and getattr(node.value, "id", "") == "apply"
            and node.attr != "role"
        ):
            found.append(f"calls apply.{node.attr} (a role's stage: apply.role runs it)")
    return [f"{path.relative_to(ROOT)}:{what}" for what in found]


def test_a_deploy_keeps_only_the_order_of_roles_and_hosts():
    deploys = sorted((ROOT / "deploy").glob("phase*.py"))
    assert deploys
    steps = [step for path in deploys for step in _deploy_steps(path)]
    assert steps == [], "role steps in deploy files (move them to roles/<role>/pyinfra_steps.py)"


def test_a_playbooks_preflight_checks_the_roles_its_plays_apply_to_the_host():
    def never(when: str) -> bool:
        return False

    assert playbook_roles(2, ["db"], never) == ["common", "firewall", "patroni", "pgbackrest"]
    backup = ["common", "firewall", "pgbackrest"]
    assert playbook_roles(2, ["monitoring", "backup"], never) == backup
    assert playbook_roles(2, ["app"], never) == ["common", "firewall", "app"]  # phase 1's
    assert playbook_roles(2, ["app"], lambda when: "groups['app'][0]" in when) == []
    assert playbook_roles(3, ["redis"], never) == [
        "common",
        "firewall",
        "redis_cluster",
        "queue_redis",
    ]
    assert playbook_roles(4, ["monitoring"], never) == [
        "common",
        "firewall",
        "exporters",
        "monitoring",
    ]
    assert playbook_roles(4, ["db"], never) == ["firewall", "exporters"]
