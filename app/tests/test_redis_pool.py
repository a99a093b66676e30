"""The Redis module: bounded pools, and the three modes (one URL, Cluster, Sentinel) against
real redis-server processes started here on loopback."""

from __future__ import annotations

import shutil
import subprocess
import threading
import time

import pytest
import redis

from grimbots import dedup, redis_pool, telegram
from grimbots.queues import get_queue
from grimbots.redis_pool import RedisPools
from grimbots.settings import Settings
from tests.conftest import REDIS_URL
from tests.redis_servers import free_port, redis_server, wait

pytestmark = pytest.mark.skipif(
    shutil.which("redis-server") is None, reason="redis-server is installed by scripts/services.sh"
)


@pytest.fixture
def local_redis(redis_client):
    return redis_client


def test_pool_never_opens_more_connections_than_its_bound(local_redis):
    pools = RedisPools(
        Settings.from_env({"GRIMBOTS_REDIS_URL": REDIS_URL, "GRIMBOTS_REDIS_MAX_CONNECTIONS": "4"})
    )
    client = pools.state()

    def hammer():
        for _ in range(50):
            client.incr("gb:test:counter")

    threads = [threading.Thread(target=hammer) for _ in range(16)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert int(client.get("gb:test:counter")) == 16 * 50
    stats = {s.name: s for s in pools.stats()}["state"]
    assert stats.max_connections == 4
    assert stats.created <= 4
    pools.close()


def test_exhausted_pool_waits_then_fails_instead_of_opening_more(local_redis):
    pools = RedisPools(
        Settings.from_env(
            {
                "GRIMBOTS_REDIS_URL": REDIS_URL,
                "GRIMBOTS_REDIS_MAX_CONNECTIONS": "1",
                "GRIMBOTS_REDIS_SOCKET_TIMEOUT": "0.2",
            }
        )
    )
    pool = pools.state().connection_pool
    held = pool.get_connection()
    try:
        with pytest.raises(redis.ConnectionError):
            pools.state().ping()
        assert {s.name: s for s in pools.stats()}["state"].in_use == 1
    finally:
        pool.release(held)
    assert pools.state().ping()
    pools.close()


def test_state_client_speaks_str_and_queue_client_bytes(local_redis):
    pools = RedisPools(Settings.from_env({"GRIMBOTS_REDIS_URL": REDIS_URL}))
    pools.state().set("gb:test:s", "v")
    assert pools.state().get("gb:test:s") == "v"
    assert pools.queue().get("gb:test:s") == b"v"
    pools.close()


def test_cluster_mode_runs_dedup_and_rate_limits_with_hash_tags(redis_cluster, local_redis):
    settings = Settings.from_env(
        {
            "GRIMBOTS_REDIS_MODE": "cluster",
            "GRIMBOTS_REDIS_CLUSTER_NODES": ",".join(f"127.0.0.1:{p}" for p in redis_cluster),
            "GRIMBOTS_REDIS_URL": REDIS_URL,
        }
    )
    redis_pool.reset_pools()
    redis_pool.get_pools(settings)
    try:
        assert isinstance(redis_pool.state(), redis.cluster.RedisCluster)
        # Bots land in different slots; each bot's locks and limits stay within its slot.
        # (The intake locks live on the queue Redis, with the job: see test_intake.py.)
        for bot_id in range(1, 30):
            assert dedup.send_lock(bot_id, 1, "digest", "key-a", media=False)
            assert not dedup.send_lock(bot_id, 1, "digest", "key-b", media=False)
            assert dedup.last_start_throttle(bot_id, 1, 10)
            assert not dedup.last_start_throttle(bot_id, 1, 11)
        limiter = telegram.RateLimiter(30, 1)
        limiter.release(limiter.acquire(7, 100), sent=True)  # answered: stamped in its slot
        started = time.monotonic()
        limiter.acquire(7, 100)
        assert time.monotonic() - started >= 0.9
    finally:
        redis_pool.reset_pools()


@pytest.fixture
def sentinel_pair(tmp_path):
    """(primary port, sentinel port)."""
    primary_port, sentinel_port = free_port(), free_port()
    primary = redis_server(tmp_path, primary_port)
    conf = tmp_path / "sentinel.conf"
    conf.write_text(
        f"port {sentinel_port}\nbind 127.0.0.1\n"
        f"sentinel monitor grimbots-queue 127.0.0.1 {primary_port} 1\n"
        "sentinel down-after-milliseconds grimbots-queue 1000\n"
    )
    sentinel = subprocess.Popen(
        ["redis-server", str(conf), "--sentinel"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        wait(
            lambda: redis.Redis(port=sentinel_port).execute_command(
                "SENTINEL", "GET-MASTER-ADDR-BY-NAME", "grimbots-queue"
            ),
            what="sentinel",
        )
        yield primary_port, sentinel_port
    finally:
        for proc in (sentinel, primary):
            proc.terminate()
            proc.wait(timeout=10)


def test_sentinel_mode_finds_the_queue_primary_for_rq(sentinel_pair, local_redis):
    primary_port, sentinel_port = sentinel_pair
    settings = Settings.from_env(
        {
            "GRIMBOTS_REDIS_URL": REDIS_URL,
            "GRIMBOTS_QUEUE_REDIS_MODE": "sentinel",
            "GRIMBOTS_SENTINELS": f"127.0.0.1:{sentinel_port}",
            "GRIMBOTS_SENTINEL_MASTER": "grimbots-queue",
            "GRIMBOTS_REDIS_MAX_CONNECTIONS": "3",
        }
    )
    redis_pool.reset_pools()
    redis_pool.get_pools(settings)
    try:
        queue = get_queue("tasks")
        queue.enqueue("grimbots.jobs.record_click", {"token": "x"})
        assert queue.count == 1
        assert redis.Redis(port=primary_port).llen("rq:queue:tasks") == 1
        stats = {s.name: s for s in redis_pool.get_pools().stats()}
        assert stats["queue"].max_connections == 3
    finally:
        redis_pool.reset_pools()
