"""The roles' input checks, run by the playbooks' first play (through the platform role's lookup
plugin ``grimbots_preflight``) and by the pyinfra deploys, before any host changes. Each role's
checks are in its folder (``roles/<role>/preflight.py``, loaded by grimbots_infra.roles); this
module holds what they share: the inputs, the vault password rule, and the phase guards.

Each check returns messages that name the variable, what is wrong, and the file to fix: where the
value came from (Ansible tags every loaded value with its origin), else the inventory.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from grimbots_infra import guards, roles

ROOT = Path(__file__).resolve().parents[3]
SECRET = re.compile(r"password|secret|token|tls_key|cipher_pass", re.I)
# Variables a value names plainly, "{{ vault_x }}" (followed to name the vault's key).
REFERENCES = re.compile(r"\{\{\s*([A-Za-z_][A-Za-z0-9_]*)\s*\}\}")
PASSWORD_CHARS = re.compile(r"^[A-Za-z0-9+/=_.~-]+$")


class PreflightError(RuntimeError):
    """A host's inputs fail the checks: the message lists every problem, one a line."""


class Inputs:
    """What a check reads: a host's variables (templated), and where each one was set."""

    def __init__(
        self,
        host: str,
        get: Callable[[str], Any],
        origin: Callable[[str], str | None],
        raw: Callable[[str], Any] | None = None,
    ):
        self.host, self._get, self._origin, self._raw = host, get, origin, raw

    def __getitem__(self, name: str) -> Any:
        return self._get(name)

    def get(self, name: str, default: Any = None) -> Any:
        try:
            value = self._get(name)
        except KeyError:
            return default
        return default if value is None else value

    def where(self, name: str) -> str:
        """The file (and line) to edit for ``name``."""
        origin = self._origin(name)
        if origin:
            path = origin.split(":")[0]
            shown = origin.replace(str(ROOT) + "/", "")
            if "/defaults/main.yml" in path:
                return (
                    f"the inventory (group_vars or host_vars of {self.host}); "
                    f"its default is at {shown}"
                )
            return shown
        return f"the inventory (group_vars or host_vars of {self.host})"

    def sources(self, name: str) -> list[str]:
        """The variables ``name``'s raw value names (``"{{ vault_x }}"``), followed through
        plain references: where an operator finds the value (the vault's key)."""
        if self._raw is None:
            return []
        found, todo = [], [name]
        for _ in range(8):
            if not todo:
                break
            current = todo.pop(0)
            try:
                raw = self._raw(current)
            except KeyError:
                continue
            names = REFERENCES.findall(str(raw)) if raw is not None else []
            for ref in names:
                single = self._raw_or_none(ref)
                if single is not None and REFERENCES.search(str(single)):
                    todo.append(ref)
                elif ref not in found:
                    found.append(ref)
        return found

    def _raw_or_none(self, name: str) -> Any:
        try:
            return self._raw(name) if self._raw else None
        except KeyError:
            return None

    def problem(self, name: str, text: str) -> str:
        value = "(secret)" if SECRET.search(name) else repr(self.get(name))
        sources = self.sources(name)
        via = f" (from {', '.join(sources)})" if sources else ""
        return f"{self.host}: {name}={value}{via}: {text}; set it in {self.where(name)}"


def vault_password(inputs: Inputs, name: str, source: str = "from the vault") -> list[str]:
    """The problem of a password that a URL, a config file or libpq could mangle, if any."""
    placeholder = guards.placeholder(inputs, name)
    if placeholder:
        return placeholder
    password = str(inputs.get(name, ""))
    if len(password) < 16 or not PASSWORD_CHARS.match(password):
        return [
            inputs.problem(name, f"needs 16+ characters among A-Z a-z 0-9 + / = _ . ~ - {source}")
        ]
    return []


# The phase guards: a playbook's first play and a pyinfra deploy name its phase as a check.
PHASE_CHECKS: dict[str, Callable[[Inputs], list[str]]] = {
    f"phase{n}": functools.partial(guards.phase, minimum=n) for n in guards.PHASES
}


def role_check(name: str) -> Callable[[Inputs], list[str]] | None:
    """A phase guard (``phaseN``) or a role's ``check`` from ``roles/<role>/preflight.py``."""
    return PHASE_CHECKS.get(name) or roles.check(name)


def check(
    names: list[str] | tuple[str, ...], inputs: Inputs, phase: int | None = None
) -> list[str]:
    """Every problem the roles' inputs have on one host (empty when it may be deployed); with
    ``phase``, first platform_phase's (1-4, at least the phase deployed): a wrong phase makes
    every role derive the wrong settings, so the roles are not checked then."""
    if phase is not None:
        problems = guards.phase(inputs, phase)
        if problems:
            return problems
    checks = [role_check(name) for name in names]
    return [p for found in checks if found is not None for p in found(inputs)]


def from_host_vars(host_vars: Mapping[str, Any]) -> Inputs:
    """Inputs from grimbots_infra.inventory.HostVars (the pyinfra side)."""
    return Inputs(
        host_vars.name,  # type: ignore[attr-defined]
        host_vars.__getitem__,
        host_vars.origin,  # type: ignore[attr-defined]
        host_vars.raw,  # type: ignore[attr-defined]
    )
