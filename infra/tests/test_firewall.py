"""The firewall's table of who talks to whom (roles/firewall): docs/network.md shows exactly it,
each host's ruleset opens each port only to the groups the table names, on their private
addresses, and preflight refuses inputs that would lock the operator out."""

from __future__ import annotations

import re

import pytest
import yaml
from production_fixture import (
    EXAMPLE_ADMIN,
    OPERATOR_ADMIN,
    copy_production,
    fake_wheels,
    load,
    problems,
)

from grimbots_infra import firewall
from grimbots_infra.inventory import ROOT
from grimbots_infra.render import render

FLOWS = yaml.safe_load((ROOT / "roles/firewall/defaults/main.yml").read_text())["firewall_flows"]


def test_docs_network_shows_the_roles_table_of_flows():
    doc = (ROOT / "docs/network.md").read_text()
    shown = re.search(
        r"<!-- firewall-table:[^\n]*-->\n(.*?)\n<!-- end firewall-table -->", doc, re.S
    )
    assert shown, "docs/network.md has no firewall-table block"
    assert shown.group(1).strip() == firewall.markdown_table(FLOWS)


@pytest.fixture(scope="module")
def production(tmp_path_factory):
    return load(copy_production(tmp_path_factory.mktemp("inv") / "production"))


@pytest.fixture(scope="module")
def wheels(tmp_path_factory) -> str:
    return str(fake_wheels(tmp_path_factory.mktemp("wheels")))


def ruleset(inventory, host: str, phase: int, wheels: str, **extra) -> str:
    play_vars = {"platform_phase": phase, "grimbots_wheels_src": wheels, **extra}
    return render("firewall", "nftables.conf.j2", inventory.vars(host, play_vars))


def accepts(text: str, port: int) -> list[str]:
    """The TCP accept lines of ``text`` whose port set names ``port``."""
    return [
        line.strip()
        for line in text.splitlines()
        if line.strip().endswith("accept") and re.search(rf"dport {{[^}}]*\b{port}\b", line)
    ]


def test_postgresql_is_open_only_to_the_app_and_db_hosts_private_addresses(production, wheels):
    text = ruleset(production, "db1.example.net", 2, wheels)
    assert accepts(text, 5432) == [
        "ip saddr { 10.0.0.11, 10.0.0.12, 10.0.0.13 } meta l4proto tcp tcp dport { 5432 } accept",
        "ip saddr { 10.0.0.21, 10.0.0.22, 10.0.0.23 } meta l4proto tcp "
        "tcp dport { 2379, 2380, 5432, 8008 } accept",
    ]
    assert "policy drop" in text and "203.0.113." not in text


def test_pgbackrest_is_open_only_between_the_backup_host_and_the_db_hosts(production, wheels):
    """Archiving from the db hosts to the repository, backups and checks back (roles/pgbackrest)."""
    port = 8432
    assert accepts(ruleset(production, "db1.example.net", 2, wheels), port) == [
        "ip saddr { 10.0.0.41 } meta l4proto tcp tcp dport { 8432 } accept"
    ]
    assert accepts(ruleset(production, "mon1.example.net", 2, wheels), port) == [
        "ip saddr { 10.0.0.21, 10.0.0.22, 10.0.0.23 } meta l4proto tcp tcp dport { 8432 } accept"
    ]
    assert accepts(ruleset(production, "app1.example.net", 2, wheels), port) == []


def test_the_app_port_faces_the_internet_in_phases_1_and_2_only_without_a_front_door(
    production, wheels
):
    plain = ruleset(production, "app1.example.net", 1, wheels, platform_front_door_on_app=False)
    assert accepts(plain, 5000) == ["meta l4proto tcp tcp dport { 5000 } accept"]
    # The front door on the app host: only HAProxy, on loopback, reaches Gunicorn.
    assert accepts(ruleset(production, "app1.example.net", 1, wheels), 5000) == []
    phase4 = ruleset(production, "app1.example.net", 4, wheels)
    assert accepts(phase4, 5000) == [
        "ip saddr { 10.0.0.10 } meta l4proto tcp tcp dport { 5000 } accept",
        "ip saddr { 10.0.0.41 } meta l4proto tcp tcp dport { 5000 } accept",
    ]


def test_https_faces_the_internet_on_the_front_door_wherever_it_runs(production, wheels):
    door = ["meta l4proto tcp tcp dport { 80, 443 } accept"]
    assert accepts(ruleset(production, "app1.example.net", 1, wheels), 443) == door
    assert accepts(ruleset(production, "app2.example.net", 3, wheels), 443) == []
    assert accepts(ruleset(production, "app1.example.net", 3, wheels), 443) == []
    assert accepts(ruleset(production, "lb1.example.net", 3, wheels), 443) == door


def test_ssh_is_open_only_to_the_admin_sources(production, wheels):
    text = ruleset(production, "redis1.example.net", 4, wheels)
    assert accepts(text, 22) == [
        f"ip saddr {{ {OPERATOR_ADMIN} }} meta l4proto tcp tcp dport {{ 22 }} accept"
    ]


def test_the_redis_cluster_bus_is_open_between_redis_hosts(production, wheels):
    text = ruleset(production, "redis2.example.net", 3, wheels)
    assert "ip saddr { 10.0.0.31, 10.0.0.32, 10.0.0.33 } meta l4proto tcp tcp dport " in text
    assert "17001, 17002" in text


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("[]", "firewall_admin_sources=[]"),
        ("[not-an-address]", "'not-an-address' is not an IP"),
        ("[deploy.example.net]", "a host name is not resolved"),
        (f"[{EXAMPLE_ADMIN}]", "is a documentation address"),
        ("[2001:db8::7]", "is a documentation address"),
    ],
)
def test_admin_sources_empty_not_addresses_or_the_examples_fail_preflight_naming_them(
    tmp_path, wheels, value, expected
):
    """The shipped example's address too: left in place, the firewall would admit only it."""
    path = copy_production(tmp_path / "production")
    main = path / "group_vars/all/main.yml"
    main.write_text(
        main.read_text().replace(
            f"firewall_admin_sources: [{OPERATOR_ADMIN}]", f"firewall_admin_sources: {value}"
        )
    )
    found = problems(load(path), 1, {"platform_phase": 1, "grimbots_wheels_src": wheels})
    assert found and all("firewall_admin_sources" in p for p in found), found
    assert any(expected in p for p in found), found
