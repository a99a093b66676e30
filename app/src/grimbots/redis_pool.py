"""The only place that creates Redis clients.

Two clients per process, each on one bounded, thread-safe pool:

* ``state()``: app state (locks, dedup, rate limits, tracking tokens); responses decoded to
  str. One URL (phase 1) or a Redis Cluster (phase 3); keys use ``{bot:<id>}`` hash tags so a
  bot's keys share a slot.
* ``queue()``: the RQ broker; raw bytes as RQ expects. One URL, or a Sentinel-managed primary
  (phase 3), because RQ does not support Redis Cluster.

A full pool makes callers wait (up to the socket timeout) instead of opening more connections:
the bound is what keeps a host's Redis ``maxclients`` safe with many processes.
"""

from __future__ import annotations

import dataclasses
import threading
from dataclasses import dataclass

import redis
from redis.cluster import ClusterNode, RedisCluster
from redis.sentinel import Sentinel, SentinelConnectionPool

from grimbots.settings import Settings


@dataclass
class PoolStats:
    name: str
    max_connections: int
    in_use: int
    created: int


class _BoundedSentinelPool(SentinelConnectionPool):
    """Sentinel pool that waits for a free connection instead of failing when full."""

    def __init__(self, service_name, sentinel_manager, **kwargs):
        self._wait_timeout = kwargs.pop("pool_wait_timeout", 5.0)
        self._free = threading.Semaphore(kwargs.get("max_connections", 50))
        super().__init__(service_name, sentinel_manager, **kwargs)

    def get_connection(self, *args, **kwargs):
        if not self._free.acquire(timeout=self._wait_timeout):
            raise redis.ConnectionError("queue Redis pool exhausted")
        try:
            return super().get_connection(*args, **kwargs)
        except BaseException:
            self._free.release()
            raise

    def release(self, connection):
        super().release(connection)
        self._free.release()


# Socket and connect timeout (s) of the readiness probe's clients: a Redis that does not answer
# fails the load balancer's check within HAProxy's check timeout, not the pools' 2 s.
PROBE_TIMEOUT = 0.5
PROBE_CONNECTIONS = 2


class RedisPools:
    """Per-process Redis clients; rebuilt lazily after fork by redis-py's own pid checks."""

    def __init__(self, settings: Settings):
        self.settings = settings
        self._state: redis.Redis | RedisCluster | None = None
        self._queue: redis.Redis | None = None
        self._probe: RedisPools | None = None
        self._lock = threading.Lock()

    def _common(self) -> dict:
        s = self.settings
        return {
            "socket_timeout": s.redis_socket_timeout,
            "socket_connect_timeout": s.redis_socket_timeout,
            "health_check_interval": 30,
            "password": s.redis_password or None,
        }

    def state(self) -> redis.Redis | RedisCluster:
        if self._state is None:
            with self._lock:
                if self._state is None:
                    self._state = self._make_state()
        return self._state

    def queue(self) -> redis.Redis:
        if self._queue is None:
            with self._lock:
                if self._queue is None:
                    self._queue = self._make_queue()
        return self._queue

    def probe(self) -> RedisPools:
        """The same Redis servers through small pools with PROBE_TIMEOUT: the readiness check
        fails fast and never waits behind the intake for a connection."""
        if self._probe is None:
            with self._lock:
                if self._probe is None:
                    fast = dataclasses.replace(
                        self.settings,
                        redis_socket_timeout=PROBE_TIMEOUT,
                        redis_max_connections=PROBE_CONNECTIONS,
                    )
                    self._probe = RedisPools(fast)
        return self._probe

    def _make_state(self) -> redis.Redis | RedisCluster:
        s = self.settings
        if s.redis_mode == "cluster":
            return RedisCluster(
                startup_nodes=[ClusterNode(h, p) for h, p in s.redis_cluster_nodes],
                decode_responses=True,
                max_connections=s.redis_max_connections,
                **self._common(),
            )
        pool = redis.BlockingConnectionPool.from_url(
            s.redis_url,
            max_connections=s.redis_max_connections,
            timeout=s.redis_socket_timeout * 2,
            decode_responses=True,
            **self._common(),
        )
        return redis.Redis(connection_pool=pool)

    def _make_queue(self) -> redis.Redis:
        s = self.settings
        if s.queue_redis_mode == "sentinel":
            common = self._common()
            sentinel = Sentinel(
                s.sentinels,
                sentinel_kwargs={
                    "socket_timeout": s.redis_socket_timeout,
                    "password": s.redis_password or None,
                },
                **common,
            )
            return sentinel.master_for(
                s.sentinel_master,
                connection_pool_class=_BoundedSentinelPool,
                max_connections=s.redis_max_connections,
                pool_wait_timeout=s.redis_socket_timeout * 2,
                **common,
            )
        pool = redis.BlockingConnectionPool.from_url(
            s.queue_redis_url,
            max_connections=s.redis_max_connections,
            timeout=s.redis_socket_timeout * 2,
            **self._common(),
        )
        return redis.Redis(connection_pool=pool)

    def stats(self) -> list[PoolStats]:
        """Size and use of each pool that exists in this process (for /health and /metrics)."""
        out = []
        for name, client in (("state", self._state), ("queue", self._queue)):
            if client is None:
                continue
            out.append(_pool_stats(name, client, self.settings.redis_max_connections))
        return out

    def close(self) -> None:
        for client in (self._state, self._queue):
            if client is not None:
                client.close()
        if self._probe is not None:
            self._probe.close()
        self._state = self._queue = self._probe = None


def _pool_stats(name: str, client, bound: int) -> PoolStats:
    if isinstance(client, RedisCluster):
        in_use = created = 0
        for node in client.get_nodes():
            pool = node.redis_connection.connection_pool if node.redis_connection else None
            if pool is not None:
                in_use += len(getattr(pool, "_in_use_connections", ()))
                created += pool._created_connections if hasattr(pool, "_created_connections") else 0
        return PoolStats(name, bound, in_use, created)
    pool = client.connection_pool
    if isinstance(pool, redis.BlockingConnectionPool):
        created = len(pool._connections)
        in_use = len(pool._get_in_use_connections())
    else:
        created = getattr(pool, "_created_connections", 0)
        in_use = len(getattr(pool, "_in_use_connections", ()))
    return PoolStats(name, pool.max_connections, in_use, created)


_pools: RedisPools | None = None
_pools_lock = threading.Lock()


def get_pools(settings: Settings | None = None) -> RedisPools:
    global _pools
    if _pools is None:
        with _pools_lock:
            if _pools is None:
                _pools = RedisPools(settings or Settings.from_env())
    return _pools


def reset_pools() -> None:
    global _pools
    with _pools_lock:
        if _pools is not None:
            _pools.close()
        _pools = None


def state() -> redis.Redis | RedisCluster:
    return get_pools().state()


def queue_connection() -> redis.Redis:
    return get_pools().queue()


def bot_tag(bot_id: int) -> str:
    """Redis Cluster hash tag that keeps all of one bot's keys in one slot."""
    return f"{{bot:{bot_id}}}"
