"""The Ansible inventory and vault, read by ansible-core's own managers for the pyinfra side.

DataLoader (with the vault secret), InventoryManager and VariableManager see exactly what an
``ansible-playbook`` run sees: group_vars/host_vars files and directories, inline ``!vault``
values, children groups, precedence. The roles of a phase are loaded into a Play so that their
``defaults/main.yml`` take part with Ansible's precedence (lowest), and every value is rendered
by Ansible's Templar on access, so Jinja expressions in variables resolve as they would there.
"""

from __future__ import annotations

import functools
import os
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[3]
ROLES_DIR = ROOT / "roles"
PLAYBOOKS_DIR = ROOT / "playbooks"


def roles_path() -> list[Path]:
    """Where roles are looked up, in order: ANSIBLE_ROLES_PATH's folders (relative ones from the
    repository's root), then roles/. Ansible reads the same variable, so a run with it set (the
    conformance suite's fixture roles) finds the same roles with both tools."""
    extra = [Path(p) for p in os.environ.get("ANSIBLE_ROLES_PATH", "").split(os.pathsep) if p]
    return [p if p.is_absolute() else ROOT / p for p in extra] + [ROLES_DIR]


def role_dir(role: str) -> Path:
    """The folder of ``role``: the first of roles_path() that has it (roles/<role> otherwise)."""
    return next((d / role for d in roles_path() if (d / role).is_dir()), ROLES_DIR / role)


class InventoryError(RuntimeError):
    """An inventory the deploys cannot use; the message says what to fix."""


def _ansible():
    """Import ansible-core lazily and initialise its plugin loader once (Play.load needs it)."""
    try:  # Under pyinfra, gevent prints the failure of a probe ansible-core makes on import.
        import gevent

        hub, stream = gevent.get_hub(), gevent.get_hub().exception_stream
        hub.exception_stream = None
    except ImportError:  # pragma: no cover - pyinfra brings gevent
        hub = None
    try:
        import ansible.template  # noqa: F401 - public; its import runs the probe
    finally:
        if hub is not None:
            hub.exception_stream = stream
    from ansible.plugins.loader import init_plugin_loader

    if not getattr(_ansible, "done", False):
        init_plugin_loader()
        _ansible.done = True


# The one use of a private ansible-core API in this repository. ansible-core tags each value it
# loads with its Origin (file:line:col), which preflight shows as the line to fix, but it offers no
# public accessor (AnsibleError prints it, never returns it). ansible-core is pinned in
# requirements-dev.txt; infra/tests/test_ansible_api.py fails, naming this, if the pinned version
# moves it; origin_of then answers None and messages name the inventory instead of the line.
PRIVATE_ORIGIN_API = "ansible._internal._datatag._tags.Origin"


def origin_of(value: Any) -> str | None:
    """Where ansible-core loaded ``value`` from (file:line:col), when it knows."""
    try:
        from ansible._internal._datatag._tags import Origin
    except ImportError:  # pragma: no cover - test_ansible_api fails first
        return None
    tag = Origin.get_tag(value)
    return str(tag) if tag else None


class HostVars(Mapping):
    """One host's variables as a task of the phase's play sees them, templated on access."""

    def __init__(self, name: str, raw: dict[str, Any], templar):
        self.name, self._raw, self._templar = name, raw, templar
        self._cache: dict[str, Any] = {}

    def __getitem__(self, key: str) -> Any:
        if key not in self._cache:
            if key not in self._raw:
                raise KeyError(f"{self.name}: variable {key!r} is not defined")
            self._cache[key] = self._templar.template(self._raw[key])
        return self._cache[key]

    def __iter__(self) -> Iterator[str]:
        return iter(self._raw)

    def __len__(self) -> int:
        return len(self._raw)

    def raw(self, key: str) -> Any:
        """``key``'s value before templating (KeyError when undefined)."""
        return self._raw[key]

    def origin(self, key: str) -> str | None:
        """``path:line:col`` where ``key``'s value was set (ansible-core tags every value it
        loads; an internal API, so None when unavailable)."""
        return origin_of(self._raw.get(key))

    @property
    def templar(self):
        """Ansible's Templar bound to this host's variables (used by render)."""
        return self._templar


class Inventory:
    """Hosts, groups and per-host variables of one inventory directory, for a list of roles."""

    def __init__(
        self,
        inventory_dir: str | Path,
        roles: list[str],
        vault_password_file: str | Path | None = None,
    ):
        _ansible()
        from ansible.constants import DEFAULT_VAULT_ID_MATCH
        from ansible.errors import AnsibleError
        from ansible.inventory.manager import InventoryManager
        from ansible.parsing.dataloader import DataLoader
        from ansible.parsing.vault import VaultSecret
        from ansible.playbook.play import Play
        from ansible.vars.hostvars import HostVars as AnsibleHostVars
        from ansible.vars.manager import VariableManager

        self.dir = Path(inventory_dir).resolve()
        if not self.dir.exists():
            raise InventoryError(f"inventory {self.dir} does not exist (GRIMBOTS_INVENTORY)")
        self.loader = DataLoader()
        self.loader.set_basedir(str(PLAYBOOKS_DIR))
        if vault_password_file:
            path = Path(vault_password_file).expanduser()
            if not path.is_file():
                raise InventoryError(
                    f"vault password file {path} does not exist (GRIMBOTS_VAULT_PASSWORD_FILE)"
                )
            secret = VaultSecret(path.read_bytes().strip())
            self.loader.set_vault_secrets([(DEFAULT_VAULT_ID_MATCH, secret)])
        try:
            self.inventory = InventoryManager(loader=self.loader, sources=[str(self.dir)])
        except AnsibleError as exc:
            raise InventoryError(f"inventory {self.dir}: {exc}") from exc
        if not self.inventory.get_hosts():
            raise InventoryError(
                f"inventory {self.dir} has no hosts (a hosts.yml with groups and ansible_host)"
            )
        self.variable_manager = VariableManager(loader=self.loader, inventory=self.inventory)
        AnsibleHostVars(self.inventory, self.variable_manager, self.loader)  # hostvars magic var
        missing = [r for r in roles if not role_dir(r).is_dir()]
        if missing:
            searched = ", ".join(map(str, roles_path()))
            raise InventoryError(f"no such role(s) under {searched}: {', '.join(missing)}")
        self.play = Play.load(
            {
                "name": "grimbots_infra",
                "hosts": "all",
                "gather_facts": False,
                "roles": [str(role_dir(r)) for r in roles],
            },
            variable_manager=self.variable_manager,
            loader=self.loader,
        )
        self._hosts: dict[str, HostVars] = {}

    @property
    def groups(self) -> dict[str, list[str]]:
        """Group name -> member host names, in inventory order (Ansible's ``groups``)."""
        return {g: [h.name for h in grp.get_hosts()] for g, grp in self.inventory.groups.items()}

    def group(self, name: str) -> list[str]:
        return self.groups.get(name, [])

    def vars(self, host: str, play_vars: dict[str, Any] | None = None) -> HostVars:
        """The variables a task of this play sees on ``host`` (vault decrypted, templated);
        ``play_vars`` are a playbook's play ``vars:`` (raw, Jinja allowed)."""
        if play_vars:
            from ansible.template import Templar, trust_as_template

            base = self.vars(host)._raw
            extra = {
                name: trust_as_template(value) if isinstance(value, str) else value
                for name, value in play_vars.items()
            }
            raw = {**base, **extra}
            return HostVars(host, raw, Templar(loader=self.loader, variables=raw))
        if host not in self._hosts:
            from ansible.errors import AnsibleError
            from ansible.template import Templar

            found = self.inventory.get_host(host)
            if found is None:
                raise InventoryError(f"host {host} is not in the inventory {self.dir}")
            try:
                raw = self.variable_manager.get_vars(
                    play=self.play, host=found, include_hostvars=True
                )
            except AnsibleError as exc:
                raise InventoryError(f"{host}: cannot read its variables: {exc}") from exc
            self._hosts[host] = HostVars(host, raw, Templar(loader=self.loader, variables=raw))
        return self._hosts[host]

    @property
    def hosts(self) -> dict[str, HostVars]:
        return {h.name: self.vars(h.name) for h in self.inventory.get_hosts()}


def default_dir() -> Path:
    """GRIMBOTS_INVENTORY (relative to the repository) or inventory/lab."""
    path = Path(os.environ.get("GRIMBOTS_INVENTORY", "inventory/lab"))
    return path if path.is_absolute() else ROOT / path


def default_vault_password_file(inventory_dir: Path) -> Path | None:
    """GRIMBOTS_VAULT_PASSWORD_FILE, else the inventory's own vault-password.txt (the lab's)."""
    env = os.environ.get("GRIMBOTS_VAULT_PASSWORD_FILE")
    if env:
        return Path(env)
    own = inventory_dir / "vault-password.txt"
    return own if own.is_file() else None


@functools.cache
def load(roles: tuple[str, ...], inventory_dir: str | None = None) -> Inventory:
    """The inventory for a phase's roles, loaded once per process."""
    path = Path(inventory_dir) if inventory_dir else default_dir()
    return Inventory(path, list(roles), default_vault_password_file(path))


def platform_contract(inventory_dir: str | None = None) -> HostVars:
    """The platform contract (roles/platform/defaults/main.yml, under the inventory's overrides)
    as the inventory's first host sees it: its paths, user and ports. ``inventory_dir`` may be a
    file: the molecule tests pass molecule's inventory, so they check what their converge got."""
    inventory = load(("platform",), inventory_dir)
    return inventory.vars(inventory.group("all")[0])


def platform_ports(inventory_dir: str | None = None) -> dict[str, Any]:
    """The platform contract's ports (platform_ports)."""
    return dict(platform_contract(inventory_dir)["platform_ports"])
