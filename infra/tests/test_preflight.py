"""The shared preflight checks: each problem names the variable and where to fix it."""

from grimbots_infra import preflight


def inputs(values: dict, origins: dict | None = None) -> preflight.Inputs:
    def get(name):
        return values[name]

    return preflight.Inputs("db1", get, lambda name: (origins or {}).get(name))


def patroni_values(**overrides) -> dict:
    values = {
        "patroni_group": "db",
        "groups": {"db": ["db1", "db2", "db3"]},
        "hostvars": {f"db{i}": {"ansible_host": f"10.0.0.{i}"} for i in (1, 2, 3)},
        "patroni_recovery_seconds": 20,
        **{
            f"patroni_{k}_password": "x" * 16
            for k in ("superuser", "replication", "rewind", "restapi", "app")
        },
    }
    return {**values, **overrides}


def test_a_valid_db_host_has_no_problem():
    assert preflight.check(["patroni"], inputs(patroni_values())) == []


def test_a_ttl_below_patronis_bound_is_refused_with_the_file_to_fix():
    origin = "/somewhere/inventory/lab/group_vars/db.yml:9:27"
    problems = preflight.check(
        ["patroni"],
        inputs(patroni_values(patroni_recovery_seconds=8), {"patroni_recovery_seconds": origin}),
    )
    assert len(problems) == 1
    assert "patroni_recovery_seconds=8" in problems[0]
    assert "at least 20" in problems[0]
    assert origin in problems[0]


def test_an_even_etcd_group_is_refused():
    values = patroni_values(groups={"db": ["db1", "db2"]})
    (problem,) = preflight.check(["patroni"], inputs(values))
    assert "odd number" in problem and "patroni_group" in problem


def test_a_short_password_is_named_but_never_shown():
    values = patroni_values(patroni_rewind_password="short-secret")
    (problem,) = preflight.check(["patroni"], inputs(values))
    assert "patroni_rewind_password=(secret)" in problem
    assert "short-secret" not in problem


def test_a_default_names_the_inventory_and_the_defaults_file():
    values = patroni_values(patroni_app_password="")
    origin = f"{preflight.ROOT}/roles/patroni/defaults/main.yml:73:23"
    (problem,) = preflight.check(["patroni"], inputs(values, {"patroni_app_password": origin}))
    assert "the inventory (group_vars or host_vars of db1)" in problem
    assert "roles/patroni/defaults/main.yml:73" in problem


def app_values(tmp_path, **overrides) -> dict:
    (tmp_path / ".stamp").touch()
    (tmp_path / "grimbots-1.0-py3-none-any.whl").touch()
    values = {
        "grimbots_wheels_src": str(tmp_path),
        "grimbots_workers": [{"queue": q, "count": 1} for q in ("tasks", "gateway", "webhook")],
        "grimbots_restart_sec": 2,
        "grimbots_local_redis": False,
        "grimbots_gateway_secrets": {"sandbox": "s" * 16},
        "grimbots_redis_mode": "cluster",
        "grimbots_redis_cluster_nodes": "10.0.0.1:7001,10.0.0.2:7001,10.0.0.3:7001",
        "grimbots_queue_redis_mode": "sentinel",
        "grimbots_sentinels": "10.0.0.1:26379,10.0.0.2:26379,10.0.0.3:26379",
        "grimbots_queue_min_replicas": 1,
        "grimbots_database_url": "postgresql://grimbots@10.0.0.4:5432/grimbots",
        "grimbots_database_password": "p" * 16,
        "platform_groups": {"db": "db"},
        "groups": {"db": ["db1"]},
    }
    return {**values, **overrides}


def test_a_phase3_app_host_has_no_problem(tmp_path):
    assert preflight.role_check("app")(inputs(app_values(tmp_path))) == []


def test_a_sentinel_queue_without_a_replica_to_wait_for_is_refused(tmp_path):
    problems = preflight.role_check("app")(
        inputs(app_values(tmp_path, grimbots_queue_min_replicas=0))
    )
    assert len(problems) == 1 and "grimbots_queue_min_replicas" in problems[0], problems


def test_cluster_mode_without_redis_hosts_is_refused(tmp_path):
    problems = preflight.role_check("app")(
        inputs(app_values(tmp_path, grimbots_redis_cluster_nodes=""))
    )
    assert len(problems) == 1 and "grimbots_redis_cluster_nodes" in problems[0], problems


def test_every_role_of_the_lab_inventory_passes_preflight_on_its_hosts():
    """The checks read only variables the roles define (a renamed knob fails here, not in CI's
    lab stage): each role on a host of its group, as each phase's first play runs them."""
    from grimbots_lab import load_lab

    lab = load_lab()
    for role, host in [
        ("common", "app1"),
        ("app", "app1"),
        ("patroni", "db1"),
        ("haproxy", "lb1"),
        ("redis_cluster", "redis1"),
        ("queue_redis", "redis1"),
        ("exporters", "db1"),
        ("monitoring", "mon1"),
    ]:
        variables = lab.vars(host, {"platform_phase": 3})
        assert preflight.check([role], preflight.from_host_vars(variables)) == [], (role, host)


def test_the_app_on_postgresql_needs_the_db_groups_password():
    from grimbots_lab import load_lab

    lab = load_lab()
    assert preflight.check(["app"], preflight.from_host_vars(lab.vars("app1"))) == []  # SQLite
    variables = lab.vars(
        "app1", {"platform_phase": 2, "grimbots_database_password": "short-secret"}
    )
    (problem,) = preflight.check(["app"], preflight.from_host_vars(variables))
    assert "grimbots_database_password=(secret)" in problem and "short-secret" not in problem
    variables = lab.vars("app1", {"grimbots_database_url": "mysql://db/grimbots"})
    (problem,) = preflight.check(["app"], preflight.from_host_vars(variables))
    assert "grimbots_database_url" in problem and "postgresql://" in problem
