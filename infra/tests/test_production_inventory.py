"""inventory/production as CI can read it: with the test-only example vault every phase's
preflight passes and every template renders; each placeholder of vault.yml.example, the example
certificate, a wrong platform_phase and a front-door host without its private address fail
preflight with the variable's name. The lab inventory passes the same plan."""

from __future__ import annotations

import re

import pytest
import yaml
from production_fixture import (
    EXAMPLE_VAULT,
    copy_production,
    fake_wheels,
    load,
    make_certificate,
    problems,
    render_all,
)

from grimbots_infra import preflight
from grimbots_infra.inventory import ROOT, Inventory
from grimbots_infra.phases import ALL_ROLES

PHASES = (1, 2, 3, 4)
EXAMPLE = yaml.safe_load(EXAMPLE_VAULT.read_text())


@pytest.fixture(scope="module")
def wheels(tmp_path_factory) -> str:
    return str(fake_wheels(tmp_path_factory.mktemp("wheels")))


@pytest.fixture(scope="module")
def production(tmp_path_factory) -> Inventory:
    return load(copy_production(tmp_path_factory.mktemp("inv") / "production"))


@pytest.mark.parametrize("phase", PHASES)
def test_the_production_inventory_passes_every_phases_preflight_with_the_example_vault(
    production, wheels, phase
):
    play_vars = {"platform_phase": phase, "grimbots_wheels_src": wheels}
    assert problems(production, phase, play_vars) == []


@pytest.mark.parametrize("phase", PHASES)
def test_every_template_renders_for_every_production_host_on_private_addresses(
    production, wheels, phase
):
    """No undefined variable anywhere, and no internal endpoint on a front door's public
    address (203.0.113.0/24 in the example): each comes from platform_private_address."""
    rendered = render_all(production, phase, {"grimbots_wheels_src": wheels})
    assert len(rendered) > 100
    public = {name: text for name, text in rendered.items() if "203.0.113." in text}
    assert public == {}
    haproxy = rendered["haproxy/haproxy.cfg.j2 on lb1.example.net"]
    assert all(f"10.0.0.1{i}:5000" in haproxy for i in (1, 2, 3))
    config = rendered["patroni/config.yml.j2 on db1.example.net"]
    assert all(f"10.0.0.1{i}/32" in config for i in (1, 2, 3))
    repo = rendered["pgbackrest/pgbackrest.conf.j2 on mon1.example.net"]
    assert all(f"pg{i}-host=10.0.0.2{i}\n" in repo for i in (1, 2, 3))
    assert "repo1-host=10.0.0.41\n" in rendered["pgbackrest/pgbackrest.conf.j2 on db1.example.net"]


@pytest.mark.parametrize("name", sorted(EXAMPLE))
def test_each_placeholder_of_the_example_vault_fails_preflight_naming_it(production, wheels, name):
    """vault.yml.example's value of ``name``, everything else from the test vault: the first
    phase whose preflight reads it refuses it and names it (the vault key, after the role
    variable). Phase 4 (cheap, and it reads most secrets again) is tried first."""
    found = []
    for phase in (4, 1, 2, 3):
        play_vars = {"platform_phase": phase, "grimbots_wheels_src": wheels, name: EXAMPLE[name]}
        found = problems(production, phase, play_vars)
        if found:
            break
    assert found, f"no phase's preflight refuses the example's {name}"
    assert any(name in p for p in found), found
    if isinstance(EXAMPLE[name], str):
        assert not any(EXAMPLE[name] in p for p in found if "secret" in p), found


@pytest.mark.parametrize(
    ("cert", "key", "refused"),
    [
        ("example", "example", "placeholder"),
        ("expired", "expired", "expired on"),
        ("fresh", "other", "does not match"),
        ("not-pem", "fresh", "needs the PEM certificate chain"),
    ],
)
def test_a_certificate_that_is_not_a_usable_one_fails_the_load_balancers_preflight(
    production, wheels, cert, key, refused
):
    fresh, expired, other = make_certificate(), make_certificate(days=-1), make_certificate()
    certs = {"fresh": fresh[0], "expired": expired[0], "not-pem": "-----BEGIN CERTIFICATE-----"}
    keys = {"fresh": fresh[1], "expired": expired[1], "other": other[1]}
    certs["example"] = EXAMPLE["vault_haproxy_tls_certificate"]
    keys["example"] = EXAMPLE["vault_haproxy_tls_key"]
    play_vars = {
        "platform_phase": 3,
        "grimbots_wheels_src": wheels,
        "vault_haproxy_tls_certificate": certs[cert],
        "vault_haproxy_tls_key": keys[key],
    }
    found = problems(production, 3, play_vars)
    assert found and all("lb1.example.net: haproxy_tls_" in p for p in found), found
    assert any(refused in p for p in found), found
    assert not any("PRIVATE KEY" in p for p in found)  # a key is never shown


# Front-door hosts whose platform_private_address the next tests drop from hosts.yml.
DROPPED = ("app1.example.net", "app2.example.net", "lb1.example.net")


@pytest.fixture(scope="module")
def without_private(tmp_path_factory) -> Inventory:
    def drop(text: str) -> str:
        for host in DROPPED:
            pattern = rf"({re.escape(host)}: \{{[^}}]*?), platform_private_address: [0-9.]+"
            text, count = re.subn(pattern, r"\1", text)
            assert count == 1, host
        return text

    return load(copy_production(tmp_path_factory.mktemp("inv") / "production", drop))


@pytest.mark.parametrize(
    ("host", "phase", "expected"),
    [
        ("app1.example.net", 2, "pg_hba uses patroni_client_address=203.0.113.11"),
        ("app1.example.net", 1, "grimbots_web_address=203.0.113.11"),
        ("app2.example.net", 3, "HAProxy's backends uses haproxy_backend_address=203.0.113.12"),
        ("lb1.example.net", 3, "grimbots_trusted_proxies uses platform_private_address=203."),
        ("lb1.example.net", 4, "Prometheus' targets uses monitoring_target_address=203.0.113.10"),
    ],
)
def test_a_front_door_host_without_its_private_address_fails_preflight_naming_it(
    without_private, wheels, host, phase, expected
):
    play_vars = {"platform_phase": phase, "grimbots_wheels_src": wheels}
    found = problems(without_private, phase, play_vars)
    assert any(expected in p and f"of {host}" in p for p in found), found
    assert all(any(h in p for h in DROPPED) for p in found), found  # nothing else is refused


@pytest.fixture(scope="module")
def lab() -> Inventory:
    path = ROOT / "inventory" / "lab"
    return Inventory(path, list(ALL_ROLES), path / "vault-password.txt")


@pytest.mark.parametrize("phase", PHASES)
def test_the_lab_inventory_passes_every_phases_preflight(lab, wheels, phase):
    """The lab's one flat private network: ansible_host is each host's private address."""
    assert problems(lab, phase, {"platform_phase": phase, "grimbots_wheels_src": wheels}) == []


@pytest.mark.parametrize("value", [0, 5, -1, "two", "2.5", 2.0, True, None, ""])
@pytest.mark.parametrize("phase", PHASES)
def test_each_phase_refuses_a_platform_phase_outside_1_to_4(value, phase):
    inputs = preflight.Inputs("app1", {"platform_phase": value}.__getitem__, lambda name: None)
    (problem,) = preflight.check(["common"], inputs, phase=phase)
    assert "platform_phase=" in problem and "must be one of 1, 2, 3, 4" in problem


@pytest.mark.parametrize("phase", PHASES)
def test_each_phase_refuses_an_inventory_below_it_and_accepts_its_own_and_later(phase):
    def guard(value):
        inputs = preflight.Inputs("h", {"platform_phase": value}.__getitem__, lambda name: None)
        return preflight.check([f"phase{phase}"], inputs)

    for below in range(1, phase):
        (problem,) = guard(below)
        assert f"set platform_phase: {phase}" in problem and f"deploying phase {phase}" in problem
    for value in range(phase, 5):
        assert guard(value) == [] and guard(str(value)) == []  # `-e platform_phase=3` is a str


@pytest.mark.parametrize("phase", PHASES)
def test_each_phases_playbook_and_deploy_run_the_phase_guard(phase):
    playbook = (ROOT / "playbooks" / f"phase{phase}.yml").read_text()
    first_play = yaml.safe_load(playbook)[0]
    assert first_play["tags"] == ["preflight"]
    guard = first_play["tasks"][0]["vars"]["platform__problems"]
    assert guard == f"{{{{ query('grimbots_preflight', 'phase{phase}') }}}}"
    deploy = (ROOT / "deploy" / f"phase{phase}.py").read_text()
    assert f"require_phase({phase})" in deploy
