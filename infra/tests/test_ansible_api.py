"""The inventory loader against ansible-core: what ``ansible-inventory`` reads, the pinned
version, and the one private API it uses (grimbots_infra.inventory.PRIVATE_ORIGIN_API)."""

from __future__ import annotations

import importlib
import json
import re
import subprocess
import sys
from importlib import metadata
from pathlib import Path

import pytest

from grimbots_infra import inventory
from grimbots_infra.inventory import ROOT, Inventory
from grimbots_infra.phases import ALL_ROLES

LAB = ROOT / "inventory" / "lab"
PRIVATE_IMPORT = re.compile(r"^\s*(from|import)\s+ansible(\.module_utils)?\._internal", re.M)
SAMPLE = ("app1", "db2", "lb1", "redis3", "mon1", "tg1")


@pytest.fixture(scope="module")
def lab() -> Inventory:
    return Inventory(LAB, list(ALL_ROLES), LAB / "vault-password.txt")


@pytest.fixture(scope="module")
def listed() -> dict:
    """``ansible-inventory --list`` of the lab, as an operator would run it."""
    command = [
        str(Path(sys.executable).parent / "ansible-inventory"),
        "-i",
        str(LAB),
        "--vault-password-file",
        str(LAB / "vault-password.txt"),
        "--list",
    ]
    done = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)


def pinned_ansible_core() -> str:
    text = (ROOT / "requirements-dev.txt").read_text()
    return re.search(r"^ansible-core==(\S+)$", text, re.M).group(1)


def test_the_loader_sees_the_groups_ansible_inventory_lists(lab, listed):
    for group, members in lab.groups.items():
        if group in ("all", "ungrouped") or not members:
            continue
        assert listed[group]["hosts"] == members, group


@pytest.mark.parametrize("host", SAMPLE)
def test_the_loader_gives_each_inventory_variable_ansible_inventory_lists(lab, listed, host):
    """Every variable ansible-inventory lists for the host (group_vars, host vars, the vault
    decrypted), untemplated, is the loader's; role defaults come under them."""
    expected = listed["_meta"]["hostvars"][host]
    assert len(expected) > 20
    variables = lab.vars(host)
    for name, value in expected.items():
        assert variables.raw(name) == value, name


def test_ansible_core_is_the_version_requirements_pin():
    assert metadata.version("ansible-core") == pinned_ansible_core(), (
        "the inventory loader (grimbots_infra.inventory) is checked against the ansible-core "
        "pinned in requirements-dev.txt: install it (pip install -r requirements-dev.txt)"
    )


def test_the_one_private_ansible_api_the_loader_uses_still_gives_the_origin(lab):
    """If this fails after an ansible-core upgrade, the private API named in
    grimbots_infra.inventory.PRIVATE_ORIGIN_API moved: find its new place (or a public one)
    and update origin_of, or preflight messages lose the file and line to fix."""
    version = pinned_ansible_core()
    module, name = inventory.PRIVATE_ORIGIN_API.rsplit(".", 1)
    try:
        assert callable(getattr(importlib.import_module(module), name).get_tag)
    except (ImportError, AttributeError) as exc:
        pytest.fail(f"{inventory.PRIVATE_ORIGIN_API} is gone in ansible-core {version}: {exc}")
    origin = lab.vars("db1").origin("patroni_superuser_password")
    assert origin and "inventory/lab/group_vars/db.yml:" in origin, (
        f"{inventory.PRIVATE_ORIGIN_API} no longer tags loaded values with their file and line "
        f"(ansible-core {version}): origin_of gave {origin!r}"
    )


def test_only_the_inventory_loader_imports_a_private_ansible_module():
    importers = sorted(
        str(path.relative_to(ROOT))
        for folder in ("infra", "deploy", "roles", "scripts", "lab", "tests", "molecule")
        for path in (ROOT / folder).rglob("*.py")
        if PRIVATE_IMPORT.search(path.read_text())
    )
    assert importers == ["infra/src/grimbots_infra/inventory.py"]
    text = (ROOT / importers[0]).read_text()
    assert len(PRIVATE_IMPORT.findall(text)) == 1
