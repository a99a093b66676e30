"""Read the Ansible inventory (YAML hosts, group_vars, host_vars, vault) and the role defaults.

One source of truth for two deploy tools: the pyinfra deploys get exactly the variables an
Ansible run gets (role defaults < group_vars/all < child groups < host_vars), with the same
vault decrypted by Ansible's own VaultLib, and render the roles' own templates with them.
Only the features this repository's inventories use are supported: YAML hosts files with
nested ``children``, ``group_vars``/``host_vars`` as files or directories, whole-file vaults.
"""

from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import jinja2
import yaml

ROOT = Path(__file__).resolve().parent.parent
ROLES_DIR = ROOT / "roles"

# Ansible's template module defaults: trim_blocks on, trailing newline kept.
# Paths are "<role>/templates/<name>.j2"; like Ansible's template module, an {% include %} of a
# bare name is also looked up in each role's templates directory.
TEMPLATES = jinja2.Environment(
    loader=jinja2.ChoiceLoader(
        [jinja2.FileSystemLoader(str(ROLES_DIR))]
        + [jinja2.FileSystemLoader(str(d)) for d in sorted(ROLES_DIR.glob("*/templates"))]
    ),
    trim_blocks=True,
    keep_trailing_newline=True,
    undefined=jinja2.StrictUndefined,
    autoescape=False,  # noqa: S701 - config files, not HTML
)


@dataclass
class Inventory:
    """Hosts with their merged, resolved variables, and groups with their members."""

    hosts: dict[str, dict[str, Any]] = field(default_factory=dict)
    groups: dict[str, list[str]] = field(default_factory=dict)


def _vault_password(inventory_dir: Path) -> str | None:
    path = os.environ.get("GRIMBOTS_VAULT_PASSWORD_FILE") or str(
        inventory_dir / "vault-password.txt"
    )
    return Path(path).read_text().strip() if Path(path).exists() else None


def _load_yaml(path: Path, password: str | None) -> dict[str, Any]:
    raw = path.read_bytes()
    if raw.startswith(b"$ANSIBLE_VAULT"):
        if password is None:
            raise RuntimeError(f"{path} is vault-encrypted: set GRIMBOTS_VAULT_PASSWORD_FILE")
        from ansible.constants import DEFAULT_VAULT_ID_MATCH
        from ansible.parsing.vault import VaultLib, VaultSecret

        vault = VaultLib([(DEFAULT_VAULT_ID_MATCH, VaultSecret(password.encode()))])
        raw = vault.decrypt(raw)
    return yaml.safe_load(raw) or {}


def _vars_of(base: Path, name: str, password: str | None) -> dict[str, Any]:
    """group_vars/<name>.yml, group_vars/<name>/*.yml (sorted), as Ansible reads them."""
    merged: dict[str, Any] = {}
    for candidate in (base / name, base / f"{name}.yml", base / f"{name}.yaml"):
        if candidate.is_dir():
            for path in sorted(candidate.iterdir()):
                if path.is_file() and path.suffix in (".yml", ".yaml", ".json", ""):
                    merged.update(_load_yaml(path, password))
        elif candidate.is_file():
            merged.update(_load_yaml(candidate, password))
    return merged


def _walk(name: str, node: dict | None, depth: int, out: dict, parents: dict) -> None:
    """Collect hosts per group (with host vars) and each group's depth from a YAML inventory."""
    node = node or {}
    out.setdefault(name, {"depth": depth, "hosts": {}, "vars": node.get("vars") or {}})
    out[name]["depth"] = max(out[name]["depth"], depth)
    for host, hvars in (node.get("hosts") or {}).items():
        out[name]["hosts"][host] = hvars or {}
    for child, child_node in (node.get("children") or {}).items():
        parents.setdefault(child, set()).add(name)
        _walk(child, child_node, depth + 1, out, parents)


def role_defaults(roles: list[str]) -> dict[str, Any]:
    merged: dict[str, Any] = {}
    for role in roles:
        path = ROLES_DIR / role / "defaults" / "main.yml"
        if path.exists():
            merged.update(yaml.safe_load(path.read_text()) or {})
    return merged


def _resolve(value: Any, context: dict[str, Any], depth: int = 0) -> Any:
    """Render Jinja expressions in variables the way Ansible does lazily, until none is left."""
    if depth > 10:
        raise RuntimeError(f"variable recursion too deep at {value!r}")
    if isinstance(value, str) and "{{" in value:
        rendered = TEMPLATES.from_string(value).render(context)
        return _resolve(rendered, context, depth + 1)
    if isinstance(value, list):
        return [_resolve(v, context, depth) for v in value]
    if isinstance(value, dict):
        return {k: _resolve(v, context, depth) for k, v in value.items()}
    return value


def load(inventory_dir: str | Path, roles: list[str]) -> Inventory:
    """Hosts of an Ansible inventory directory with the variables an Ansible run would see."""
    inventory_dir = Path(inventory_dir).resolve()
    password = _vault_password(inventory_dir)
    hosts_file = next(
        p for p in (inventory_dir / "hosts.yml", inventory_dir / "hosts.yaml") if p.exists()
    )
    tree = yaml.safe_load(hosts_file.read_text()) or {}
    groups: dict[str, dict] = {}
    parents: dict[str, set] = {}
    _walk("all", tree.get("all", tree), 0, groups, parents)

    def members(group: str) -> list[str]:
        found = list(groups[group]["hosts"])
        for child, ps in parents.items():
            if group in ps:
                found += [h for h in members(child) if h not in found]
        return found

    group_members = {g: members(g) for g in groups}
    group_members["all"] = list(dict.fromkeys(h for g in groups for h in groups[g]["hosts"]))
    group_members["ungrouped"] = group_members.get("ungrouped", [])
    defaults = role_defaults(roles)
    result = Inventory(groups=group_members)
    for host in group_members["all"]:
        host_groups = sorted(
            (g for g, m in group_members.items() if host in m and g in groups),
            key=lambda g: (groups[g]["depth"], g),
        )
        merged = dict(defaults)
        for g in host_groups:
            merged.update(groups[g]["vars"])
            merged.update(_vars_of(inventory_dir / "group_vars", g, password))
        for g in host_groups:
            merged.update(groups[g]["hosts"].get(host, {}))
        merged.update(_vars_of(inventory_dir / "host_vars", host, password))
        magic = {
            "inventory_hostname": host,
            "inventory_dir": str(inventory_dir),
            "playbook_dir": str(ROOT / "playbooks"),
            "groups": group_members,
            "group_names": [g for g in host_groups if g != "all"],
        }
        context = {**merged, **magic}
        result.hosts[host] = {**_resolve(merged, context), **magic}
    return result


def render(template: str, variables: dict[str, Any]) -> str:
    """Render roles/<role>/templates/<name>.j2 exactly as Ansible's template module would."""
    return TEMPLATES.get_template(template).render(variables)


def sha1(text: str) -> str:
    """Ansible's ``hash('sha1')`` filter."""
    return hashlib.sha1(text.encode()).hexdigest()  # noqa: S324 - a change marker, not security
