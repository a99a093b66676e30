"""/health/ready: what HAProxy checks says whether this node can take webhooks now, so a fault
every node shares that the intake does not need (the database) leaves the backend full."""

from __future__ import annotations

import socket
import time

import pytest
import redis

from grimbots import db as db_module
from grimbots import redis_pool
from tests import test_redis_pool
from tests.conftest import REDIS_URL, make_settings
from tests.redis_servers import wait

# Nothing listens on port 1: a connection there is refused at once.
DOWN_DATABASE = "postgresql://grimbots:grimbots@127.0.0.1:1/grimbots"
DOWN_REDIS = "redis://127.0.0.1:1/0"


@pytest.fixture
def make_client(redis_client):
    """A test client of an app built from these settings overrides (database on SQLite)."""
    from grimbots.app import create_app

    def build(**overrides):
        db_module.reset_db()
        redis_pool.reset_pools()
        settings = make_settings(overrides.pop("database_url", "sqlite://"), **overrides)
        app = create_app(settings)
        app.testing = True
        return app.test_client()

    yield build
    db_module.reset_db()
    redis_pool.reset_pools()


def test_ready_is_200_while_the_database_is_down(make_client):
    client = make_client(database_url=DOWN_DATABASE)
    assert client.get("/health").status_code == 503
    resp = client.get("/health/ready")
    assert resp.status_code == 200, resp.json
    assert resp.json == {
        "status": "ok",
        "checks": {"state_redis": {"ok": True}, "queue_redis": {"ok": True}},
    }


def test_ready_is_503_when_the_queue_redis_is_down(make_client):
    client = make_client(GRIMBOTS_QUEUE_REDIS_URL=DOWN_REDIS)
    resp = client.get("/health/ready")
    assert resp.status_code == 503
    assert resp.json["checks"]["state_redis"] == {"ok": True}
    assert resp.json["checks"]["queue_redis"] == {"ok": False, "error": "ConnectionError"}


def test_ready_is_503_when_the_state_redis_is_down(make_client):
    client = make_client(GRIMBOTS_REDIS_URL=DOWN_REDIS, GRIMBOTS_QUEUE_REDIS_URL=REDIS_URL)
    resp = client.get("/health/ready")
    assert resp.status_code == 503
    assert resp.json["checks"]["state_redis"]["ok"] is False
    assert resp.json["checks"]["queue_redis"] == {"ok": True}


def test_ready_names_no_host_or_port_even_on_loopback(make_client):
    client = make_client(GRIMBOTS_QUEUE_REDIS_URL=DOWN_REDIS)
    resp = client.get("/health/ready")
    assert resp.status_code == 503
    body = resp.get_data(as_text=True)
    assert "127.0.0.1" not in body and ":1" not in body


def test_ready_fails_within_the_probe_timeout_when_redis_hangs(make_client):
    # A server that accepts connections (the kernel's backlog) but never answers.
    hung = socket.socket()
    hung.bind(("127.0.0.1", 0))
    hung.listen(16)
    try:
        port = hung.getsockname()[1]
        client = make_client(GRIMBOTS_QUEUE_REDIS_URL=f"redis://127.0.0.1:{port}/0")
        started = time.monotonic()
        resp = client.get("/health/ready")
        took = time.monotonic() - started
    finally:
        hung.close()
    assert resp.status_code == 503
    assert resp.json["checks"]["queue_redis"] == {"ok": False, "error": "TimeoutError"}
    # The intake's pools would wait their 2 s socket timeout; HAProxy gives a check 0.6 s.
    assert took < 2 * redis_pool.PROBE_TIMEOUT + 0.3, took


# A real primary and Sentinel (tests/test_redis_pool.py's pair).
sentinel_pair = test_redis_pool.sentinel_pair


def _sentinel(port: int, *args) -> None:
    redis.Redis(port=port).execute_command("SENTINEL", "SET", "grimbots-queue", *args)


def test_a_queue_primary_sentinel_sees_down_is_a_shared_fault_and_keeps_the_node_ready(
    make_client, sentinel_pair
):
    primary_port, sentinel_port = sentinel_pair
    # Slow to judge first: a primary only this node cannot reach is this node's fault.
    _sentinel(sentinel_port, "down-after-milliseconds", "60000")
    client = make_client(
        GRIMBOTS_QUEUE_REDIS_MODE="sentinel",
        GRIMBOTS_SENTINELS=f"127.0.0.1:{sentinel_port}",
        GRIMBOTS_SENTINEL_MASTER="grimbots-queue",
    )
    assert client.get("/health/ready").status_code == 200
    redis.Redis(port=primary_port).shutdown(nosave=True)
    resp = client.get("/health/ready")
    assert resp.status_code == 503
    assert resp.json["checks"]["queue_redis"] == {"ok": False, "error": "ConnectionError"}

    _sentinel(sentinel_port, "down-after-milliseconds", "200")
    watcher = redis.Redis(port=sentinel_port, decode_responses=True)
    wait(
        lambda: "s_down" in watcher.sentinel_master("grimbots-queue", True)["flags"],
        what="the sentinel to see the primary down",
    )
    resp = client.get("/health/ready")
    assert resp.status_code == 200, resp.json
    assert resp.json["checks"]["queue_redis"]["shared"] is True
    assert resp.json["checks"]["queue_redis"]["ok"] is False
