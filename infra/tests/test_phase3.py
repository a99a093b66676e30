"""Phase 3's shared pieces: the derived check timings, the preflight checks of the new roles and
the configuration both tools render from the lab inventory."""

import pytest

from grimbots_infra import derive, preflight
from grimbots_infra.inventory import ROOT, Inventory
from grimbots_infra.phases import ALL_ROLES
from grimbots_infra.render import render

LAB = ROOT / "inventory" / "lab"


@pytest.fixture(scope="module")
def lab() -> Inventory:
    return Inventory(LAB, list(ALL_ROLES), LAB / "vault-password.txt")


def test_haproxy_takes_a_dead_node_out_within_the_knob():
    for seconds in range(1, 31):
        t = derive.haproxy_check_timings(seconds)
        assert t["fall"] >= 2 and t["rise"] >= 2
        assert derive.haproxy_out_of_rotation_ms(seconds) <= seconds * 1000


def test_haproxy_timings_at_the_default_knob_are_round():
    assert derive.haproxy_check_timings(3) == {
        "inter": 1200,
        "fastinter": 600,
        "fall": 2,
        "rise": 2,
        "timeout_check": 600,
    }
    assert derive.haproxy_out_of_rotation_ms(3) == 2400


def test_rendered_haproxy_cfg_lists_app1_to_app3_with_the_derived_checks(lab):
    text = render("haproxy", "haproxy.cfg.j2", lab.vars("lb1"))
    for i in (1, 2, 3):
        assert f"    server app{i} 10.77.0.1{i}:5000\n" in text
    assert "check inter 1200 fastinter 600 downinter 1200 fall 2 rise 2" in text
    assert "timeout check 600ms" in text
    assert "bind *:443 ssl crt /etc/haproxy/certs/site.pem" in text
    assert "ssl-min-ver TLSv1.2" in text
    assert "http-check expect status 200" in text
    assert "acl idempotent path_beg /webhook/telegram/" in text
    assert "http-request disable-l7-retry unless idempotent" in text
    assert "level admin" in text and "prometheus-exporter" in text


def haproxy_values(**overrides) -> dict:
    values = {
        "haproxy_backend_group": "app",
        "groups": {"app": ["app1", "app2"]},
        "hostvars": {f"app{i}": {"ansible_host": f"10.0.0.{i}"} for i in (1, 2)},
        "haproxy_recovery_seconds": 3,
        "haproxy_stats_password": "s" * 16,
        "haproxy_tls_selfsigned": True,
        "haproxy_go_rate_limit": 100,
        "haproxy_go_rate_period_s": 10,
        "haproxy_body_limit_bytes": 1024,
    }
    return {**values, **overrides}


def inputs(values: dict) -> preflight.Inputs:
    return preflight.Inputs("lb1", values.__getitem__, lambda name: None)


def test_a_valid_load_balancer_has_no_problem():
    assert preflight.check(["haproxy"], inputs(haproxy_values())) == []


def test_haproxy_without_app_nodes_is_refused():
    (problem,) = preflight.check(["haproxy"], inputs(haproxy_values(groups={"app": []})))
    assert "haproxy_backend_group" in problem and "no app node" in problem


def test_haproxy_needs_a_certificate_unless_self_signed():
    problems = preflight.check(["haproxy"], inputs(haproxy_values(haproxy_tls_selfsigned=False)))
    names = [p.split("=")[0] for p in problems]
    assert names == ["lb1: haproxy_tls_certificate", "lb1: haproxy_tls_key"]


def test_a_short_stats_password_is_named_but_never_shown():
    (problem,) = preflight.check(
        ["haproxy"], inputs(haproxy_values(haproxy_stats_password="short"))
    )
    assert "haproxy_stats_password=(secret)" in problem
    assert "'short'" not in problem
