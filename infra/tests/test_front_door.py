"""The front door (roles/haproxy) wherever the inventory puts it: on the first app host in
phases 1-2 in front of Gunicorn on loopback, on lb from phase 3; certificates from an ACME CA
over HTTP-01, checked by preflight."""

from __future__ import annotations

import pytest
import yaml
from production_fixture import copy_production, fake_wheels, load

from grimbots_infra import preflight
from grimbots_infra.inventory import Inventory
from grimbots_infra.render import render


@pytest.fixture(scope="module")
def production(tmp_path_factory) -> Inventory:
    return load(copy_production(tmp_path_factory.mktemp("inv") / "production"))


@pytest.fixture(scope="module")
def wheels(tmp_path_factory) -> str:
    return str(fake_wheels(tmp_path_factory.mktemp("wheels")))


def host_vars(production: Inventory, host: str, phase: int, wheels: str):
    return production.vars(host, {"platform_phase": phase, "grimbots_wheels_src": wheels})


DOORS = [
    (1, ["app1.example.net"]),
    (2, ["app1.example.net"]),
    (3, ["lb1.example.net"]),
    (4, ["lb1.example.net"]),
]


@pytest.mark.parametrize(("phase", "door"), DOORS)
def test_the_front_door_is_the_first_app_host_until_phase_3_then_lb(
    production, wheels, phase, door
):
    assert (
        list(host_vars(production, "app1.example.net", phase, wheels)["platform_front_door"])
        == door
    )


def test_in_phase_1_haproxy_on_the_app_host_forwards_to_gunicorn_on_loopback_only(
    production, wheels
):
    variables = host_vars(production, "app1.example.net", 1, wheels)
    cfg = render("haproxy", "haproxy.cfg.j2", variables)
    assert "    server app1.example.net 127.0.0.1:5000\n" in cfg
    assert "10.0.0.12:5000" not in cfg  # no other app node before phase 3
    env = render("app", "grimbots.env.j2", variables)
    assert "GRIMBOTS_WEB_BIND=127.0.0.1:5000\n" in env
    assert "GRIMBOTS_TRUSTED_PROXIES=127.0.0.1,10.0.0.10\n" in env


def test_from_phase_3_gunicorn_listens_for_the_load_balancer_again(production, wheels):
    variables = host_vars(production, "app1.example.net", 3, wheels)
    env = render("app", "grimbots.env.j2", variables)
    assert "GRIMBOTS_WEB_BIND=127.0.0.1:5000,10.0.0.11:5000\n" in env  # its private address
    assert "GRIMBOTS_TRUSTED_PROXIES=10.0.0.10\n" in env


def test_port_80_serves_only_the_challenge_path_and_redirects_the_rest(production, wheels):
    cfg = render("haproxy", "haproxy.cfg.j2", host_vars(production, "app1.example.net", 1, wheels))
    assert "use_backend acme if { path_beg /.well-known/acme-challenge/ }" in cfg
    challenge = "{ path_beg /.well-known/acme-challenge/ }"
    assert f"http-request redirect scheme https code 301 unless {challenge}" in cfg
    assert "backend acme\n    server acme 127.0.0.1:8402\n" in cfg


def test_certbot_asks_lets_encrypt_for_the_public_name_with_the_deploy_hook(production, wheels):
    variables = host_vars(production, "lb1.example.net", 3, wheels)
    script = render("haproxy", "haproxy-acme-cert.j2", variables)
    assert "server=https://acme-v02.api.letsencrypt.org/directory" in script
    assert "want=bots.example.net" in script
    assert "--http-01-address 127.0.0.1 --http-01-port 8402" in script
    assert (
        "--keep-until-expiring" in script
        and "--deploy-hook /usr/local/lib/grimbots/haproxy-acme-deploy" in script
    )
    hook = render("haproxy", "haproxy-acme-deploy.j2", variables)
    assert "bundle=/etc/ssl/certs/ca-certificates.crt" in hook  # the system's roots
    assert "systemctl reload haproxy" in hook


def acme_values(**overrides) -> dict:
    values = {
        "haproxy_backend_group": "app",
        "haproxy_backend_local": True,
        "groups": {"app": ["app1"]},
        "hostvars": {"app1": {"ansible_host": "10.0.0.1"}},
        "haproxy_recovery_seconds": 3,
        "haproxy_stats_password": "s" * 16,
        "haproxy_tls_selfsigned": False,
        "haproxy_tls_certificate": "",
        "haproxy_tls_key": "",
        "haproxy_acme": True,
        "haproxy_acme_domains": ["bots.example.net"],
        "haproxy_acme_directory": "https://acme-v02.api.letsencrypt.org/directory",
        "haproxy_acme_port": 8402,
        "haproxy_go_rate_limit": 100,
        "haproxy_go_rate_period_s": 10,
        "haproxy_body_limit_bytes": 1024,
    }
    values.update(overrides)
    return values


def inputs(values: dict) -> preflight.Inputs:
    return preflight.Inputs("app1", values.__getitem__, lambda name: None)


def test_acme_alone_needs_no_certificate_from_the_vault():
    assert preflight.check(["haproxy"], inputs(acme_values())) == []


def test_without_acme_the_vault_certificate_is_required():
    problems = preflight.check(["haproxy"], inputs(acme_values(haproxy_acme=False)))
    assert any("haproxy_tls_certificate" in p for p in problems)


@pytest.mark.parametrize(
    ("overrides", "variable", "why"),
    [
        ({"haproxy_acme_domains": []}, "haproxy_acme_domains", "no name"),
        ({"haproxy_acme_domains": ["203.0.113.5"]}, "haproxy_acme_domains", "not a DNS name"),
        ({"haproxy_acme_domains": ["bad name"]}, "haproxy_acme_domains", "not a DNS name"),
        ({"haproxy_acme_directory": "http://ca/dir"}, "haproxy_acme_directory", "https://"),
        ({"haproxy_acme_port": 0}, "haproxy_acme_port", "TCP port"),
    ],
)
def test_acme_settings_that_cannot_work_fail_preflight_naming_the_variable(
    overrides, variable, why
):
    (problem,) = preflight.check(["haproxy"], inputs(acme_values(**overrides)))
    assert variable in problem and why in problem


def test_prometheus_probes_every_front_door_for_its_certificate_expiry(production, wheels):
    """The blackbox job: each front door's HTTPS (at its private address), through the exporter
    on the monitoring host, module tls_expiry (probe_ssl_earliest_cert_expiry)."""
    variables = host_vars(production, "mon1.example.net", 4, wheels)
    config = yaml.safe_load(render("monitoring", "prometheus.yml.j2", variables))
    (job,) = [j for j in config["scrape_configs"] if j["job_name"] == "blackbox"]
    assert job["params"] == {"module": ["tls_expiry"]}
    assert [c["targets"] for c in job["static_configs"]] == [["https://10.0.0.10:443/"]]
    assert job["relabel_configs"][-1]["replacement"] == "127.0.0.1:9115"
