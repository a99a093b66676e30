"""Fail when a role installs a Debian package that the lab image does not have.

Lab hosts have no package mirror, so every package a role asks for must already be in the image
(lab/packages.txt). Roles declare their packages in `roles/*/defaults/main.yml`, in variables
whose names end with `_packages` (docs/contracts.md). Usage: python lab/check_packages.py [REPO]
"""

import sys
from pathlib import Path

import yaml


def image_packages(path: Path) -> set[str]:
    """Package names in packages.txt (one per line, `#` comments)."""
    names = (line.split("#", 1)[0].strip() for line in path.read_text().splitlines())
    return {name for name in names if name}


def role_packages(defaults: Path) -> dict[str, list[str]]:
    """`*_packages` variables of one role's defaults, with their literal package names.

    Jinja expressions are skipped: they name other variables, which are checked on their own.
    """
    data = yaml.safe_load(defaults.read_text()) or {}
    found: dict[str, list[str]] = {}
    for var, value in data.items():
        if not str(var).endswith("_packages"):
            continue
        items = value if isinstance(value, list) else [value]
        names = [
            str(item).split("=", 1)[0].strip()  # "pkg=1.2" pins a version of pkg
            for item in items
            if isinstance(item, str) and item.strip() and "{{" not in item and "{%" not in item
        ]
        found[str(var)] = names
    return found


def main() -> int:
    repo = Path(sys.argv[1]) if len(sys.argv) > 1 else Path(__file__).resolve().parent.parent
    available = image_packages(repo / "lab" / "packages.txt")
    missing: list[str] = []
    checked = 0
    for defaults in sorted(repo.glob("roles/*/defaults/main.yml")):
        role = defaults.parent.parent.name
        for var, names in role_packages(defaults).items():
            checked += len(names)
            missing += [f"  role {role}: {var}: {n}" for n in names if n not in available]
    if missing:
        print("lab image lacks packages that roles install (add them to lab/packages.txt):")
        print("\n".join(missing))
        return 1
    print(f"lab packages: all {checked} packages the roles ask for are in lab/packages.txt")
    return 0


if __name__ == "__main__":
    sys.exit(main())
