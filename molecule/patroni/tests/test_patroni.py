"""The patroni role on three containers: etcd quorum, one leader, two streaming replicas, one of
them synchronous, the app's database, the REST API's authentication and the config modes."""

import json
import os

import testinfra.utils.ansible_runner

from grimbots_infra.inventory import platform_ports

testinfra_hosts = testinfra.utils.ansible_runner.AnsibleRunner(
    os.environ["MOLECULE_INVENTORY_FILE"]
).get_hosts("db")

# The platform contract's ports as the converge got them (molecule's inventory).
PORTS = platform_ports(os.environ["MOLECULE_INVENTORY_FILE"])

ADDRESSES = ["10.78.0.21", "10.78.0.22", "10.78.0.23"]
ENDPOINTS = ",".join(f"http://{a}:{PORTS['etcd_client']}" for a in ADDRESSES)


def _url(host, path: str) -> str:
    """A path of the host's Patroni REST API."""
    return f"http://{_address(host)}:{PORTS['patroni_rest']}{path}"


def _rest(host, path: str) -> dict:
    return json.loads(host.check_output(f"curl -sf --max-time 5 {_url(host, path)}"))


def _cluster(host) -> dict:
    return _rest(host, "/cluster")


def _psql(host, query: str) -> str:
    return host.check_output(
        f"runuser -u postgres -- psql -h /var/run/postgresql -XAtqc {json.dumps(query)}"
    )


def _address(host) -> str:
    return host.check_output("hostname -I").split()[0]


def test_etcd_has_three_healthy_members(host):
    health = host.run(f"ETCDCTL_API=3 etcdctl --endpoints={ENDPOINTS} endpoint health")
    assert health.rc == 0, health.stderr
    assert health.stdout.count("is healthy") + health.stderr.count("is healthy") == 3
    members = host.check_output("ETCDCTL_API=3 etcdctl member list")
    assert len(members.splitlines()) == 3, members
    assert members.count("started") == 3, members


def test_cluster_has_one_leader_and_two_running_replicas_one_synchronous(host):
    members = _cluster(host)["members"]
    roles = sorted(m["role"] for m in members)
    assert roles == ["leader", "replica", "sync_standby"], members
    assert all(m["state"] in ("running", "streaming") for m in members), members


def test_leader_streams_to_two_replicas_and_replicas_stream_from_it(host):
    leader = next(m for m in _cluster(host)["members"] if m["role"] == "leader")
    if leader["host"] == _address(host):
        rows = _psql(host, "SELECT state, sync_state FROM pg_stat_replication").splitlines()
        assert sorted(rows) == ["streaming|async", "streaming|sync"], rows
        assert _psql(host, "SELECT pg_is_in_recovery()") == "f"
    else:
        assert _psql(host, "SELECT pg_is_in_recovery()") == "t"
        assert _psql(host, "SELECT status FROM pg_stat_wal_receiver") == "streaming"


def test_replicas_report_their_timeline_so_metrics_parse(host):
    metrics = host.check_output(f"curl -sf --max-time 5 {_url(host, '/metrics')}")
    timeline = [
        line for line in metrics.splitlines() if line.startswith("patroni_postgres_timeline")
    ]
    assert timeline, metrics[:500]
    assert "None" not in metrics
    assert int(float(timeline[0].split()[-1])) >= 1


def test_recovery_knob_sets_ttl_loop_wait_and_retry_timeout(host):
    config = _rest(host, "/config")
    assert (config["ttl"], config["loop_wait"], config["retry_timeout"]) == (20, 4, 8)
    assert config["loop_wait"] + 2 * config["retry_timeout"] <= config["ttl"]
    assert config["synchronous_mode"] is True
    assert config["postgresql"]["use_pg_rewind"] is True


def test_app_database_is_owned_by_the_app_role(host):
    owner = _psql(host, "SELECT pg_get_userbyid(datdba) FROM pg_database WHERE datname='grimbots'")
    assert owner == "grimbots"


def test_rest_api_refuses_unsafe_methods_without_credentials(host):
    code = host.check_output(
        f"curl -s -o /dev/null -w '%{{http_code}}' --max-time 5 -X POST {_url(host, '/restart')}"
    )
    assert code == "401"


def test_patronictl_works_without_arguments_for_the_config(host):
    out = host.check_output("patronictl list -f json")
    assert len(json.loads(out)) == 3


def test_configuration_holding_passwords_is_not_world_readable(host):
    config = host.file("/etc/patroni/config.yml")
    assert config.user == "root" and config.group == "postgres" and config.mode == 0o640
    spec = host.file("/etc/patroni/app-database.json")
    assert spec.user == "postgres" and spec.mode == 0o600


def test_no_password_on_any_command_line(host):
    cmdlines = host.check_output("cat /proc/[0-9]*/cmdline 2>/dev/null | tr '\\0' ' ' || true")
    assert "molecule-" not in cmdlines
