"""The roles, found by their folders: what a role checks lives in ``roles/<role>/preflight.py``,
the host steps pyinfra runs besides its manifest (if any) in ``roles/<role>/pyinfra_steps.py``
(run by ``grimbots_infra.apply.role``), the values it derives from its knobs (and the Jinja
filters that expose them) in ``roles/<role>/derived.py``.

A role's ``preflight.py`` exposes ``check(inputs) -> list[str]`` (every problem of one host's
variables, empty when it may be deployed). This module loads it by path, the one way both tools
use: the platform role's lookup plugin ``grimbots_preflight`` (Ansible) and
``grimbots_infra.pyinfra_ops.host_vars`` (pyinfra) both call ``grimbots_infra.preflight.check``,
which asks here. Nothing lists the roles: a folder under ``roles/`` with ``meta/main.yml`` is one.
"""

from __future__ import annotations

import importlib.util
import sys
from collections.abc import Callable
from pathlib import Path
from types import ModuleType
from typing import Any

from grimbots_infra.inventory import ROLES_DIR, role_dir

# The role every other role depends on: it has no manifest of its own and no checks.
PLATFORM = "platform"


def names(roles_dir: Path = ROLES_DIR) -> tuple[str, ...]:
    """Every role under ``roles_dir`` except the platform, sorted: whose defaults the inventory
    loader layers under every host's variables."""
    return tuple(
        sorted(
            d.name
            for d in roles_dir.iterdir()
            if (d / "meta" / "main.yml").is_file() and d.name != PLATFORM
        )
    )


def module(role: str, stem: str = "preflight") -> ModuleType | None:
    """``roles/<role>/<stem>.py`` loaded by path (once per file), or None when it has none:
    ``preflight`` (its checks), ``pyinfra_steps`` (host steps of a role that pyinfra runs
    besides its manifest, in the order its Ansible tasks run them) or ``derived``."""
    return _load(role_dir(role) / f"{stem}.py", f"grimbots_role_{role}_{stem}")


def _load(path: Path, name: str) -> ModuleType | None:
    if not path.is_file():
        return None
    loaded = sys.modules.get(name)
    if loaded is not None and Path(getattr(loaded, "__file__", "")) == path:
        return loaded
    spec = importlib.util.spec_from_file_location(name, path)
    assert spec is not None and spec.loader is not None
    loaded = importlib.util.module_from_spec(spec)
    sys.modules[name] = loaded
    spec.loader.exec_module(loaded)
    return loaded


def pyinfra_steps(role: str) -> ModuleType:
    """``roles/<role>/pyinfra_steps.py``: a deploy calls its ``apply_role(variables)``."""
    found = module(role, "pyinfra_steps")
    if found is None:
        raise FileNotFoundError(f"roles/{role}/pyinfra_steps.py")
    return found


def check(role: str) -> Callable[[Any], list[str]] | None:
    """The role's ``check(inputs)``, or None when the role checks nothing."""
    found = module(role)
    return getattr(found, "check", None) if found is not None else None


def derived(role: str) -> ModuleType:
    """``roles/<role>/derived.py``: the values the role derives from its knobs (its templates
    read them through FILTERS; preflight, pyinfra and the tests call the functions)."""
    found = module(role, "derived")
    if found is None:
        raise FileNotFoundError(f"roles/{role}/derived.py")
    return found


def filters(roles_dir: Path = ROLES_DIR) -> dict[str, Callable[..., Any]]:
    """Every role's ``FILTERS`` in one mapping, for the platform role's filter plugin. Two roles
    defining one filter name is an error: a template must not depend on which one wins."""
    out: dict[str, Callable[..., Any]] = {}
    for role in names(roles_dir):
        found = _load(roles_dir / role / "derived.py", f"grimbots_role_{role}_derived")
        for name, function in getattr(found, "FILTERS", {}).items():
            if name in out:
                raise ValueError(f"filter {name} is defined by two roles (roles/{role}/derived.py)")
            out[name] = function
    return out
