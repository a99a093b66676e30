"""Each Redis host: two cluster instances and the queue Redis with Sentinel, running from their
own units and files, the password never on a command line."""

import os

import testinfra.utils.ansible_runner

from grimbots_infra.inventory import platform_ports

testinfra_hosts = testinfra.utils.ansible_runner.AnsibleRunner(
    os.environ["MOLECULE_INVENTORY_FILE"]
).get_hosts("redis")

# The platform contract's ports as the converge got them (molecule's inventory): the two cluster
# instances (their units are redis-cluster@<port>) and the queue Redis.
PORTS = platform_ports(os.environ["MOLECULE_INVENTORY_FILE"])
CLUSTER = PORTS["redis_cluster"]
QUEUE = PORTS["redis"]
PASSWORD = "molecule-redis-0123456789"
AUTH = f"REDISCLI_AUTH={PASSWORD} redis-cli --no-auth-warning"


def test_every_instance_runs_enabled_and_debians_defaults_are_off(host):
    for unit in (*(f"redis-cluster@{p}" for p in CLUSTER), "redis-server@queue",
                 "redis-sentinel@queue"):  # fmt: skip
        assert host.service(unit).is_running, unit
        assert host.service(unit).is_enabled, unit
    for unit in ("redis-server", "redis-sentinel"):
        assert not host.service(unit).is_running, unit


def test_the_password_is_in_files_never_on_a_command_line(host):
    assert PASSWORD not in host.check_output("ps -eo args")
    conf = host.file("/etc/redis/cluster.conf")
    assert conf.mode == 0o640 and conf.user == "root" and conf.group == "redis"
    assert host.run(f"redis-cli -p {CLUSTER[0]} PING").stdout.strip().startswith("NOAUTH")


def test_cluster_instances_have_aof_and_the_derived_node_timeout(host):
    for port in CLUSTER:
        assert host.check_output(f"{AUTH} -p {port} CONFIG GET appendonly").split() == [
            "appendonly",
            "yes",
        ]
        # redis_cluster_recovery_seconds 8 -> 4000 ms (roles/redis_cluster/derived.py).
        timeout = host.check_output(f"{AUTH} -p {port} CONFIG GET cluster-node-timeout").split()
        assert timeout == ["cluster-node-timeout", "4000"]
        nodes = host.file(f"/var/lib/redis/cluster-{port}/nodes.conf")
        assert nodes.exists and nodes.user == "redis"
        assert "myself" in nodes.content_string


def test_the_queue_redis_refuses_writes_without_a_replica_and_keeps_aof(host):
    assert host.check_output(f"{AUTH} -p {QUEUE} CONFIG GET min-replicas-to-write").split() == [
        "min-replicas-to-write",
        "1",
    ]
    assert host.check_output(f"{AUTH} -p {QUEUE} CONFIG GET appendonly").split()[1] == "yes"
