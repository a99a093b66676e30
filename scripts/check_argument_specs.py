#!/usr/bin/env python3
"""Fail when a role's defaults, argument_specs and README drift apart.

STYLE.md: ``defaults/main.yml`` is a role's whole interface, every variable with a one-line
comment; ``meta/argument_specs.yml`` mirrors it (names and types); the README names every
variable. This check keeps the three in step for every role under ``roles/``.
"""

from __future__ import annotations

import sys
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parent.parent

PY_TYPES = {
    "str": (str,),
    "path": (str,),
    "raw": (object,),
    "int": (int,),
    "float": (float, int),
    "bool": (bool,),
    "list": (list,),
    "dict": (dict,),
}


def undocumented(defaults_path: Path, names: list[str]) -> list[str]:
    """Variables whose line is not directly preceded by a comment line."""
    lines = defaults_path.read_text().splitlines()
    missing = []
    for name in names:
        for i, line in enumerate(lines):
            if line.startswith(f"{name}:"):
                if i == 0 or not lines[i - 1].lstrip().startswith("#"):
                    missing.append(name)
                break
    return missing


def check_role(role: Path) -> list[str]:
    errors: list[str] = []
    defaults_path = role / "defaults" / "main.yml"
    specs_path = role / "meta" / "argument_specs.yml"
    readme = role / "README.md"
    if not defaults_path.exists():
        return errors
    defaults = yaml.safe_load(defaults_path.read_text()) or {}
    if not specs_path.exists():
        return [f"{role.name}: meta/argument_specs.yml is missing"]
    specs = yaml.safe_load(specs_path.read_text()) or {}
    options = (specs.get("argument_specs", {}).get("main", {}) or {}).get("options", {}) or {}

    for name in sorted(set(defaults) - set(options)):
        errors.append(f"{role.name}: {name} is in defaults but not in argument_specs")
    for name in sorted(set(options) - set(defaults)):
        if not options[name].get("required"):
            errors.append(f"{role.name}: {name} is in argument_specs but has no default")
    for name in undocumented(defaults_path, list(defaults)):
        errors.append(f"{role.name}: {name} has no one-line comment above it in defaults")
    for name, value in defaults.items():
        spec = options.get(name)
        if not spec:
            continue
        if not spec.get("description"):
            errors.append(f"{role.name}: {name} has no description in argument_specs")
        kind = spec.get("type", "str")
        if isinstance(value, str) and "{{" in value:
            continue  # a template: its type is known only at run time
        allowed = PY_TYPES.get(kind)
        if allowed is None:
            errors.append(f"{role.name}: {name} has unknown type {kind!r}")
        elif kind in ("int", "float") and isinstance(value, bool):
            errors.append(f"{role.name}: {name} default {value!r} is a bool, spec says {kind}")
        elif not isinstance(value, allowed):
            errors.append(
                f"{role.name}: {name} default {value!r} is {type(value).__name__}, spec says {kind}"
            )
        choices = spec.get("choices")
        if choices and value not in choices:
            errors.append(f"{role.name}: {name} default {value!r} is not among {choices}")
    if not readme.exists():
        errors.append(f"{role.name}: README.md is missing")
    else:
        text = readme.read_text()
        for name in defaults:
            if f"`{name}`" not in text:
                errors.append(f"{role.name}: README.md does not describe `{name}`")
    return errors


def main() -> int:
    roles = sorted(p for p in (ROOT / "roles").iterdir() if p.is_dir())
    errors = [e for role in roles for e in check_role(role)]
    for error in errors:
        print(f"argument_specs drift: {error}")
    print(f"checked {len(roles)} roles: {'FAILED' if errors else 'ok'}")
    return 1 if errors else 0


if __name__ == "__main__":
    sys.exit(main())
