"""Phase 3's shared pieces: the derived check timings, the preflight checks of the new roles and
the configuration both tools render from the lab inventory."""

import pytest

from grimbots_infra import preflight, roles
from grimbots_infra.inventory import ROOT, Inventory
from grimbots_infra.phases import ALL_ROLES
from grimbots_infra.render import render

haproxy = roles.derived("haproxy")
redis_cluster = roles.derived("redis_cluster")
queue_redis = roles.derived("queue_redis")

LAB = ROOT / "inventory" / "lab"


@pytest.fixture(scope="module")
def lab() -> Inventory:
    return Inventory(LAB, list(ALL_ROLES), LAB / "vault-password.txt")


def test_haproxy_takes_a_dead_node_out_within_the_knob():
    for seconds in range(1, 31):
        t = haproxy.haproxy_check_timings(seconds)
        assert t["fall"] >= 2 and t["rise"] >= 2
        assert haproxy.haproxy_out_of_rotation_ms(seconds) <= seconds * 1000


def test_haproxy_timings_at_the_default_knob_are_round():
    assert haproxy.haproxy_check_timings(3) == {
        "inter": 1200,
        "fastinter": 600,
        "fall": 2,
        "rise": 2,
        "timeout_check": 600,
    }
    assert haproxy.haproxy_out_of_rotation_ms(3) == 2400


def test_rendered_haproxy_cfg_lists_app1_to_app3_with_the_derived_checks(lab):
    text = render("haproxy", "haproxy.cfg.j2", lab.vars("lb1"))
    for i in (1, 2, 3):
        assert f"    server app{i} 10.77.0.1{i}:5000\n" in text
    assert "check inter 1200 fastinter 600 downinter 1200 fall 2 rise 2" in text
    assert "timeout check 600ms" in text
    assert "bind *:443 ssl crt /etc/haproxy/certs/site.pem" in text
    assert "ssl-min-ver TLSv1.2" in text
    # The app's readiness, not /health: a database failover must not fail every node's check.
    assert "http-check send meth GET uri /health/ready ver HTTP/1.1 hdr Host lb1\n" in text
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


def test_redis_cluster_node_timeout_leaves_time_for_the_election():
    assert redis_cluster.redis_cluster_node_timeout_ms(8) == 4000
    for seconds in range(5, 31):
        timeout_s = redis_cluster.redis_cluster_node_timeout_ms(seconds) / 1000
        assert timeout_s + redis_cluster.REDIS_CLUSTER_ELECTION_SECONDS + 1 <= seconds


def test_sentinel_timings_follow_the_queue_knob():
    assert queue_redis.sentinel_timings(10) == {"down_after_ms": 7000, "failover_timeout_ms": 60000}
    for seconds in range(4, 31):
        t = queue_redis.sentinel_timings(seconds)
        assert t["down_after_ms"] / 1000 + queue_redis.SENTINEL_FAILOVER_SECONDS <= seconds


def test_rendered_redis_files_carry_the_derived_timings_and_the_first_host_as_primary(lab):
    variables = lab.vars("redis2")
    cluster = render("redis_cluster", "cluster.conf.j2", variables)
    assert "cluster-node-timeout 4000\n" in cluster
    assert "cluster-announce-ip 10.77.0.32\n" in cluster
    assert "appendonly yes\n" in cluster
    queue = render("queue_redis", "redis-queue.conf.j2", variables)
    assert "replicaof 10.77.0.31 6379\n" in queue
    assert "min-replicas-to-write 1\n" in queue
    assert "\nreplicaof " not in render("queue_redis", "redis-queue.conf.j2", lab.vars("redis1"))
    sentinel = render("queue_redis", "sentinel-queue.conf.j2", variables)
    assert "sentinel monitor grimbots-queue 10.77.0.31 6379 2\n" in sentinel
    assert "sentinel down-after-milliseconds grimbots-queue 7000\n" in sentinel
    assert variables["redis_cluster_units"] == ["redis-cluster@7001", "redis-cluster@7002"]


def test_the_lab_redis_hosts_pass_preflight(lab):
    for name in ("redis1", "redis2", "redis3"):
        inputs_ = preflight.from_host_vars(lab.vars(name))
        assert preflight.check(["redis_cluster", "queue_redis"], inputs_) == []


def redis_values(**overrides) -> dict:
    values = {
        "groups": {"redis": ["redis1", "redis2", "redis3"]},
        "hostvars": {f"redis{i}": {"ansible_host": f"10.0.0.{i}"} for i in (1, 2, 3)},
        "redis_cluster_group": "redis",
        "redis_cluster_anti_affinity": True,
        "redis_cluster_ports": [7001, 7002],
        "redis_cluster_recovery_seconds": 8,
        "redis_cluster_password": "p" * 16,
        "queue_redis_group": "redis",
        "queue_redis_quorum": 2,
        "queue_redis_min_replicas_to_write": 1,
        "queue_redis_recovery_seconds": 10,
        "queue_redis_password": "p" * 16,
    }
    return {**values, **overrides}


def redis_inputs(values: dict) -> preflight.Inputs:
    return preflight.Inputs("redis1", values.__getitem__, lambda name: None)


def test_a_two_host_cluster_is_refused_unless_anti_affinity_is_relaxed():
    two = {"groups": {"redis": ["redis1", "redis2"]}}
    (problem,) = preflight.check(["redis_cluster"], redis_inputs(redis_values(**two)))
    assert "redis_cluster_group" in problem and "3+ hosts" in problem
    relaxed = redis_values(redis_cluster_anti_affinity=False, **two)
    assert preflight.check(["redis_cluster"], redis_inputs(relaxed)) == []


def test_a_sentinel_quorum_below_a_majority_is_refused():
    (problem,) = preflight.check(["queue_redis"], redis_inputs(redis_values(queue_redis_quorum=1)))
    assert "queue_redis_quorum" in problem and "majority" in problem


def test_a_queue_that_acknowledges_writes_on_one_host_is_refused():
    values = redis_values(queue_redis_min_replicas_to_write=0)
    (problem,) = preflight.check(["queue_redis"], redis_inputs(values))
    assert "queue_redis_min_replicas_to_write" in problem


def test_a_redis_password_with_a_space_is_refused_without_showing_it():
    values = redis_values(redis_cluster_password="sixteen chars and more")
    (problem,) = preflight.check(["redis_cluster"], redis_inputs(values))
    assert "redis_cluster_password=(secret)" in problem and "chars and" not in problem


def test_a_cluster_bus_port_list_that_is_not_each_port_plus_10000_is_refused():
    ports = {"redis_cluster_bus": [17001, 17003]}  # Redis puts the bus at port + 10000
    (problem,) = preflight.check(
        ["redis_cluster"], redis_inputs(redis_values(platform_ports=ports))
    )
    assert "platform_ports" in problem and "[17001, 17002]" in problem
    ok = {"redis_cluster_bus": [17001, 17002]}
    assert preflight.check(["redis_cluster"], redis_inputs(redis_values(platform_ports=ok))) == []
