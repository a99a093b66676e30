"""Real redis-server processes on loopback for the tests of the Redis modes and of the move:
single servers on free ports, and a three-master Redis Cluster."""

from __future__ import annotations

import random
import socket
import subprocess
import time

import pytest
import redis


def wait(predicate, timeout=15.0, what="condition"):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if predicate():
                return
        except redis.RedisError:
            pass
        time.sleep(0.1)
    raise TimeoutError(f"timed out waiting for {what}")


def free_port() -> int:
    """A port nobody listens on now: fixed ports collide when two suites run at once."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def free_cluster_port() -> int:
    """A free port whose cluster bus port (port + 10000) is free too, below 65536."""
    for _ in range(200):
        port = random.randrange(20000, 30000)
        try:
            for candidate in (port, port + 10000):
                with socket.socket() as sock:
                    sock.bind(("127.0.0.1", candidate))
        except OSError:
            continue
        return port
    raise RuntimeError("no free port pair for a cluster node")


def redis_server(tmp_path, port, *extra):
    workdir = tmp_path / str(port)
    workdir.mkdir()
    proc = subprocess.Popen(
        [
            "redis-server",
            "--port",
            str(port),
            "--bind",
            "127.0.0.1",
            "--save",
            "",
            "--appendonly",
            "no",
            "--dir",
            str(workdir),
            *extra,
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    wait(lambda: redis.Redis(port=port).ping(), what=f"redis on {port}")
    assert proc.poll() is None, f"port {port} is served by another process"
    return proc


@pytest.fixture
def redis_cluster(tmp_path):
    ports = []
    while len(ports) < 3:
        port = free_cluster_port()
        if port not in ports:
            ports.append(port)
    procs = [
        redis_server(
            tmp_path, p, "--cluster-enabled", "yes", "--cluster-config-file", f"nodes-{p}.conf"
        )
        for p in ports
    ]
    try:
        subprocess.run(
            [
                "redis-cli",
                "--cluster",
                "create",
                *[f"127.0.0.1:{p}" for p in ports],
                "--cluster-replicas",
                "0",
                "--cluster-yes",
            ],
            check=True,
            capture_output=True,
            timeout=30,
        )
        wait(
            lambda: (
                b"cluster_state:ok" in redis.Redis(port=ports[0]).execute_command("CLUSTER", "INFO")
            ),
            what="cluster ok",
        )
        yield ports
    finally:
        for proc in procs:
            proc.terminate()
            proc.wait(timeout=10)
