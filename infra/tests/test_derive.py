"""The derived values both deploy tools and the tests use: the shared ones (grimbots_infra.derive)
and each role's (roles/<role>/derived.py)."""

import pytest

from grimbots_infra import derive, roles

patroni = roles.derived("patroni")
app = roles.derived("app")
monitoring = roles.derived("monitoring")


def test_recovery_knob_20_gives_patronis_bounds():
    assert patroni.patroni_timings(20) == {"ttl": 20, "loop_wait": 4, "retry_timeout": 8}


def test_every_knob_keeps_loop_wait_plus_two_retries_within_ttl():
    for knob in range(20, 121):
        t = patroni.patroni_timings(knob)
        assert t["loop_wait"] + 2 * t["retry_timeout"] <= t["ttl"], t


def test_failover_bound_follows_the_knob():
    assert patroni.failover_bound(20) == 29
    assert patroni.failover_bound(30) == 30 + 6 + 2 + 3


def test_worker_instances_are_queue_dash_number():
    workers = [{"queue": "tasks", "count": 2}, {"queue": "webhook", "count": "1"}]
    assert app.worker_instances(workers) == ["tasks-1", "tasks-2", "webhook-1"]


def test_redis_bound_counts_two_pools_per_process_and_work_horse():
    assert app.redis_clients_needed(2, [{"queue": "tasks", "count": 11}], 10) == 480


def test_postgres_url_lists_every_host_without_a_password():
    url = derive.postgres_url(["10.0.0.1", "10.0.0.2"], 5432, "db", "app", ["a=1", "b=2"])
    assert url == "postgresql://app@10.0.0.1:5432,10.0.0.2:5432/db?a=1&b=2"


def test_an_address_falls_back_to_ansible_host():
    hostvars = {"db1": {"ansible_host": "10.0.0.1"}, "db2": {"patroni_address": "192.168.0.2"}}
    assert derive.addresses(["db1", "db2"], hostvars) == ["10.0.0.1", "192.168.0.2"]


def test_the_bcrypt_hash_is_stable_per_host_and_verifies():
    import bcrypt

    first = monitoring.bcrypt_hash("a-long-web-password-123", "mon1")
    assert first == monitoring.bcrypt_hash("a-long-web-password-123", "mon1")
    assert first != monitoring.bcrypt_hash("a-long-web-password-123", "mon2")
    assert first.startswith(f"$2b${monitoring.BCRYPT_COST:02d}$")
    assert bcrypt.checkpw(b"a-long-web-password-123", first.encode())
    assert not bcrypt.checkpw(b"another-password", first.encode())


def test_every_roles_filters_reach_the_filter_plugin_and_a_name_taken_twice_is_refused(tmp_path):
    """The platform's filter plugin serves each role's FILTERS (roles/<role>/derived.py); two
    roles defining one filter would make a template depend on which was loaded last."""
    collected = roles.filters()
    assert collected["grimbots_patroni_timings"] is patroni.patroni_timings
    assert collected["grimbots_bcrypt"] is monitoring.bcrypt_hash
    for name in ("one", "two"):
        role = tmp_path / name
        (role / "meta").mkdir(parents=True)
        (role / "meta" / "main.yml").write_text("---\n")
        (role / "derived.py").write_text("FILTERS = {'grimbots_same': len}\n")
    with pytest.raises(ValueError, match="grimbots_same is defined by two roles"):
        roles.filters(tmp_path)
