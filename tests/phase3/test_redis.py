"""Phase 3 on the lab, the Redis hosts: one Redis Cluster over the three hosts (every slot
covered, every master with a replica on another host) and the queue Redis under three
Sentinels that agree on its primary, which only acknowledges writes a replica can hold."""

from __future__ import annotations

import pytest
import redis

import grimbots_lab as lab2


@pytest.fixture(scope="module")
def lab():
    return lab2.load_lab()


@pytest.fixture(scope="module")
def hosts(lab) -> dict[str, str]:
    """Address -> inventory name of the redis group."""
    return {lab.hosts[h]["ansible_host"]: h for h in lab.groups["redis"]}


def _client(lab, address: str, port: int, password_var: str) -> redis.Redis:
    first = lab.hosts[lab.groups["redis"][0]]
    return redis.Redis(
        host=address,
        port=port,
        password=first[password_var],
        socket_timeout=5,
        decode_responses=True,
    )


def test_the_cluster_covers_every_slot_with_replicas_off_their_masters_hosts(lab, hosts):
    first = lab.hosts[lab.groups["redis"][0]]
    ports = [int(p) for p in first["redis_cluster_ports"]]
    seen = {}
    for address in hosts:
        for port in ports:
            client = _client(lab, address, port, "redis_cluster_password")
            info = client.execute_command("CLUSTER INFO")
            assert info["cluster_state"] == "ok", (address, port, info)
            assert int(info["cluster_slots_ok"]) == 16384, (address, port, info)
            seen[(address, port)] = client.execute_command("CLUSTER NODES")
    nodes = next(iter(seen.values()))
    masters = {nid: n for nid, n in nodes.items() if "master" in n["flags"]}
    replicas = {nid: n for nid, n in nodes.items() if "slave" in n["flags"]}
    print(
        f"\nCLUSTER: {len(masters)} masters, {len(replicas)} replicas on {sorted(hosts.values())}"
    )
    assert len(masters) == len(hosts) and len(replicas) == len(hosts), nodes
    host_of = {n["node_id"]: addr.split(":")[0] for addr, n in nodes.items()}
    for addr, replica in replicas.items():
        master_host = host_of[replica["master_id"]]
        assert addr.split(":")[0] != master_host, f"replica {addr} is on its master's host"


def test_the_sentinels_agree_on_one_primary_that_waits_for_a_replica(lab, hosts):
    first = lab.hosts[lab.groups["redis"][0]]
    name = first["queue_redis_master_name"]
    sentinel_port = int(first["queue_redis_sentinel_port"])
    primaries = set()
    for address in hosts:
        sentinel = _client(lab, address, sentinel_port, "queue_redis_password")
        primaries.add(tuple(sentinel.execute_command("SENTINEL", "GET-MASTER-ADDR-BY-NAME", name)))
        assert sentinel.execute_command("SENTINEL", "CKQUORUM", name).startswith("OK"), address
    assert len(primaries) == 1, primaries
    ((address, port),) = primaries
    primary = _client(lab, address, int(port), "queue_redis_password")
    replication = primary.info("replication")
    print(
        f"\nQUEUE REDIS: primary {hosts[address]} ({address}:{port}), "
        f"{replication['connected_slaves']} replicas, Sentinels agree"
    )
    assert replication["role"] == "master" and replication["connected_slaves"] == len(hosts) - 1
    assert int(primary.config_get("min-replicas-to-write")["min-replicas-to-write"]) >= 1
