"""app/requirements.lock agrees with pyproject.toml: a range changed without relocking fails here.

The lock is what the hosts get (scripts/build-wheels.sh builds exactly its versions), so every
runtime dependency must be pinned in it, inside its range, with hashes; and it must also hold
what the hosts' Python 3.11.2 needs that the controller's newer 3.11 does not (async-timeout).
"""

from __future__ import annotations

import re
import tomllib
from importlib import metadata
from pathlib import Path

from packaging.requirements import Requirement
from packaging.utils import canonicalize_name
from packaging.version import Version

APP = Path(__file__).resolve().parents[1]
# The hosts' Python (Debian 12) and the controller's: the lock must fit both.
PYTHONS = ("3.11.2", "3.11.7")
PIN = re.compile(r"^([A-Za-z0-9._-]+)==(\S+)")


def locked() -> dict[str, tuple[Version, list[str]]]:
    """name -> (version, hashes) for every pin in the lock."""
    pins: dict[str, tuple[Version, list[str]]] = {}
    name = None
    for line in (APP / "requirements.lock").read_text().splitlines():
        if match := PIN.match(line):
            name = canonicalize_name(match[1])
            pins[name] = (Version(match[2]), [])
        elif name and (hashed := re.search(r"--hash=sha256:([0-9a-f]{64})", line)):
            pins[name][1].append(hashed[1])
    return pins


def runtime_requirements() -> list[Requirement]:
    pyproject = tomllib.loads((APP / "pyproject.toml").read_text())
    return [Requirement(spec) for spec in pyproject["project"]["dependencies"]]


def environment(python: str) -> dict[str, str]:
    return {"python_full_version": python, "python_version": python.rsplit(".", 1)[0]}


def test_lock_pins_every_runtime_dependency_inside_its_range():
    pins = locked()
    assert pins, "no pin found in requirements.lock"
    for req in runtime_requirements():
        name = canonicalize_name(req.name)
        assert name in pins, f"{req} is not in requirements.lock: relock (docs/app.md)"
        version = pins[name][0]
        assert req.specifier.contains(version, prereleases=True), (
            f"requirements.lock has {name}=={version}, outside {req}: relock (docs/app.md)"
        )


def test_lock_has_hashes_for_every_pin():
    for name, (version, hashes) in locked().items():
        assert hashes, f"{name}=={version} has no hash in requirements.lock"


def test_lock_holds_what_every_locked_package_needs_on_the_hosts_python():
    """Each locked package's own requirements (those that apply on 3.11.2 or 3.11.7) are locked.

    Read from the installed metadata of each package installed at its locked version (the dev
    venv installs the lock), with the extras pyproject asks for (psycopg[binary]).
    """
    pins = locked()
    extras = {canonicalize_name(r.name): r.extras for r in runtime_requirements()}
    checked = 0
    for name, (version, _) in pins.items():
        try:
            dist = metadata.distribution(name)
        except metadata.PackageNotFoundError:
            continue  # async-timeout on 3.11.7: not installed, has no requirements
        if Version(dist.version) != version:
            continue
        checked += 1
        for spec in dist.requires or []:
            req = Requirement(spec)
            wanted = any(
                req.marker is None or req.marker.evaluate({**environment(py), "extra": extra})
                for py in PYTHONS
                for extra in (*extras.get(name, ()), "")
            )
            if wanted:
                assert canonicalize_name(req.name) in pins, f"{name} needs {req}, not locked"
                assert req.specifier.contains(pins[canonicalize_name(req.name)][0], True), (
                    f"{name} needs {req}, locked {pins[canonicalize_name(req.name)][0]}"
                )
    assert checked, "no locked package is installed at its locked version"
