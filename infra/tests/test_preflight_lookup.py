"""The platform's lookup ``grimbots_preflight`` as a playbook's task calls it: the Ansible
side of the shared checks, on the lab inventory's own variables (vault decrypted)."""

from __future__ import annotations

from collections import Counter

import pytest
from ansible.plugins.loader import lookup_loader
from ansible.template import Templar
from ansible.vars import hostvars

from grimbots_infra import preflight
from grimbots_infra.inventory import ROOT, Inventory, role_dir
from grimbots_infra.phases import ALL_ROLES

LAB = ROOT / "inventory" / "lab"


@pytest.fixture(scope="module")
def lab() -> Inventory:
    return Inventory(LAB, list(ALL_ROLES), LAB / "vault-password.txt")


def run_lookup(lab: Inventory, terms: list[str], variables: dict) -> list[str]:
    lookup_loader.add_directory(str(role_dir("platform") / "lookup_plugins"))
    templar = Templar(loader=lab.loader, variables=variables)
    lookup = lookup_loader.get("grimbots_preflight", loader=lab.loader, templar=templar)
    return lookup.run(terms, variables)


def test_a_check_reads_only_the_other_hosts_it_names(lab, monkeypatch):
    """The firewall's check reads its source groups' members' addresses: the lookup hands it
    Ansible's lazy hostvars, never templated whole (every variable of every host, about 3 s
    per check on the lab: most of a no-op rerun's time)."""
    read: Counter[str] = Counter()
    original = hostvars.HostVars.__getitem__

    def counting(self, name):
        read[name] += 1
        return original(self, name)

    monkeypatch.setattr(hostvars.HostVars, "__getitem__", counting)
    assert run_lookup(lab, ["firewall"], lab.vars("db1")._raw) == []
    # tg1 and out1 (the lab's fake Telegram and outside host) are in no group a flow names.
    assert read and not {"tg1", "out1"} & set(read), sorted(read)


@pytest.mark.parametrize("host", ["app1", "db1", "redis1", "lb1", "mon1"])
@pytest.mark.parametrize("given", [{}, {"firewall_admin_sources": ["not-an-address"]}])
def test_the_lookup_finds_what_the_pyinfra_side_finds(lab, host, given):
    """The same problems, in the same words, as grimbots_infra.pyinfra_ops.host_vars raises."""
    expected = preflight.check(["firewall"], preflight.from_host_vars(lab.vars(host, given)))
    assert bool(expected) == bool(given)
    assert run_lookup(lab, ["firewall"], {**lab.vars(host)._raw, **given}) == expected
