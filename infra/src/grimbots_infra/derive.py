"""Values derived from inventory knobs, computed in one place.

Ansible reads them through the filter plugin of the platform role
(roles/platform/filter_plugins/platform.py, e.g. ``patroni_recovery_seconds |
grimbots_patroni_timings``); pyinfra, the preflight checks and the lab tests import them directly.
"""

from __future__ import annotations

import base64
import hashlib
from collections.abc import Iterable, Mapping
from typing import Any

# Patroni's documented lower bound for ttl (Patroni 3.2+ raises a smaller ttl to 20 silently).
PATRONI_MIN_TTL = 20
# Seconds a replica spends before promoting itself asking every other member for its WAL position
# (Patroni 3.0's REST call has a 2 s timeout, which the dead member always uses up).
PATRONI_MEMBER_CHECK_SECONDS = 2
# Seconds the app needs to find the new primary once it is promoted: libpq's connect_timeout (2 s)
# on the dead host, then a connect to the next one (the app retries a failed transaction once).
APP_RECONNECT_SECONDS = 3
# Queues an RQ worker may serve (the tasks workers also drain tracking and marathon).
KNOWN_QUEUES = ("tasks", "gateway", "webhook", "tracking", "marathon")
REQUIRED_QUEUES = ("tasks", "gateway", "webhook")


def patroni_timings(recovery_seconds: int | str) -> dict[str, int]:
    """ttl, loop_wait and retry_timeout from the one recovery knob (= ttl).

    Patroni's rule is loop_wait + 2 x retry_timeout <= ttl; loop_wait = ttl // 5 and
    retry_timeout = (ttl - loop_wait) // 2 keep it, and give Patroni's defaults at ttl 30
    (loop_wait 6 instead of 10: a replica notices a dead leader sooner). At ttl 20: 4 and 8.
    """
    ttl = int(recovery_seconds)
    loop_wait = max(1, ttl // 5)
    return {"ttl": ttl, "loop_wait": loop_wait, "retry_timeout": (ttl - loop_wait) // 2}


def failover_bound(recovery_seconds: int | str) -> int:
    """Seconds after a leader's death within which writes must succeed again: the leader key
    expires at most ttl after its last refresh, a replica sees it within one loop_wait, asks the
    other members (one of them dead) and promotes, then the app reconnects. 29 s at ttl 20."""
    t = patroni_timings(recovery_seconds)
    return t["ttl"] + t["loop_wait"] + PATRONI_MEMBER_CHECK_SECONDS + APP_RECONNECT_SECONDS


def worker_instances(workers: Iterable[Mapping[str, Any]]) -> list[str]:
    """grimbots_workers as systemd instance names <queue>-<n> (grimbots-worker@<queue>-<n>)."""
    return [f"{w['queue']}-{n}" for w in workers for n in range(1, int(w["count"]) + 1)]


def redis_clients_needed(
    web_workers: int | str, workers: Iterable[Mapping[str, Any]], max_connections: int | str
) -> int:
    """The most Redis connections the app's processes may open: every Gunicorn worker, every RQ
    worker and its work horse, two pools each (state and queue), each pool bounded."""
    total_workers = sum(int(w["count"]) for w in workers)
    return (int(web_workers) + 2 * total_workers) * 2 * int(max_connections)


def address(hostvars: Mapping[str, Any], name: str, key: str = "patroni_address") -> str:
    """A host's address for ``key`` (its inventory value), else its private address
    (platform_private_address: production's front-door hosts have a public ansible_host), else
    its ansible_host (the lab's and molecule's hosts have one, private, address)."""
    other = hostvars[name]
    return str(
        other.get(key) or other.get("platform_private_address") or other.get("ansible_host") or name
    )


def postgres_url(
    addresses: Iterable[str], port: int | str, database: str, user: str, options: Iterable[str]
) -> str:
    """The libpq multi-host URL of the app (no password: libpq reads PGPASSWORD)."""
    hosts = ",".join(f"{a}:{int(port)}" for a in addresses)
    return f"postgresql://{user}@{hosts}/{database}?{'&'.join(options)}"


def etcd_endpoints(addresses: Iterable[str], port: int | str) -> str:
    """etcd client URLs of every member, comma-separated (etcdctl --endpoints, Patroni)."""
    return ",".join(f"http://{a}:{int(port)}" for a in addresses)


def schema_stamp(wheel_stamp: str, database_url: str) -> str:
    """What the app's schema was migrated for: the code (wheel set) and the database URL."""
    return hashlib.sha1(f"{wheel_stamp} {database_url}".encode()).hexdigest()  # noqa: S324


def addresses(
    members: Iterable[str], hostvars: Mapping[str, Any], key: str = "patroni_address"
) -> list[str]:
    """Each member's address for ``key`` (see address), in the group's order."""
    return [address(hostvars, m, key) for m in members]


# bcrypt's cost for the web configurations' basic auth: Prometheus and Alertmanager check it on
# every request (exporter-toolkit caches the result), so keep it modest.
BCRYPT_COST = 10
_B64 = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/"
_BCRYPT64 = b"./ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789"


def bcrypt_hash(password: str, seed: str) -> str:
    """The bcrypt hash of ``password`` for a web configuration's ``basic_auth_users``.

    The salt comes from the password and ``seed`` (e.g. the host's name) instead of the random
    generator, so the same inputs give the same file and a second deploy changes nothing.
    """
    import bcrypt

    digest = hashlib.sha256(f"{seed}\0{password}".encode()).digest()[:16]
    salt = base64.b64encode(digest)[:22].translate(bytes.maketrans(_B64, _BCRYPT64))
    prefix = f"$2b${BCRYPT_COST:02d}$".encode()
    return bcrypt.hashpw(password.encode(), prefix + salt).decode()


# HAProxy marks a server down after this many failed checks in a row (2 rather than 1: one lost
# check must not take a healthy node out of rotation).
HAPROXY_FALL = 2


def haproxy_check_timings(recovery_seconds: int | str) -> dict[str, int]:
    """HAProxy's check ``inter``, ``fastinter``, ``fall``, ``rise`` and ``timeout check`` (ms)
    from the one knob: the most seconds a dead app node may stay in rotation.

    A node dying just after a passing check is out once ``fall`` checks failed: the first starts
    up to ``inter`` later, each later one ``fastinter`` after the previous (HAProxy's interval
    once a check failed), and the last may wait out ``timeout check`` (a dead host answers no
    SYN). So inter + (fall - 1) x fastinter + timeout_check must stay within the knob; a fifth of
    it is kept as margin for a busy scheduler; a quarter of the rest is the check timeout (a slow
    /health under load must not look dead). At 3 s: inter 1200, fastinter 600, timeout 600 ms:
    out after at most 2.4 s.
    """
    budget = int(recovery_seconds) * 1000 * 4 // 5
    timeout_check = max(100, budget // 4)
    # inter = 2 x fastinter, so inter + (fall - 1) x fastinter = (fall + 1) x fastinter.
    fastinter = max(100, (budget - timeout_check) // (HAPROXY_FALL + 1))
    return {
        "inter": 2 * fastinter,
        "fastinter": fastinter,
        "fall": HAPROXY_FALL,
        "rise": 2,
        "timeout_check": timeout_check,
    }


def haproxy_out_of_rotation_ms(recovery_seconds: int | str) -> int:
    """The longest a dead node stays in rotation with haproxy_check_timings (ms)."""
    t = haproxy_check_timings(recovery_seconds)
    return t["inter"] + (t["fall"] - 1) * t["fastinter"] + t["timeout_check"]


# Seconds a Redis Cluster replica spends between its master's PFAIL and its promotion: the
# failure reports spread by gossip (measured up to about 2 s), then the election waits 500 ms +
# up to 500 ms random + 1 s per rank, and the vote takes a round trip. Three seconds covers the
# best-ranked replica (molecule measured node timeout + 1.2-2.3 s); the app's cluster client
# needs about one more to refresh its slot map.
REDIS_CLUSTER_ELECTION_SECONDS = 3


def redis_cluster_node_timeout_ms(recovery_seconds: int | str) -> int:
    """cluster-node-timeout from the one knob: the most seconds until the cluster is ok again
    after a master's host dies (a master is flagged PFAIL after node-timeout, FAIL once most
    masters agree, then its replica is elected). At 8 s: 4000 ms (bounded below by 1000 ms:
    shorter flags healthy nodes on a busy host)."""
    budget = (int(recovery_seconds) - REDIS_CLUSTER_ELECTION_SECONDS - 1) * 1000
    return max(1000, budget)


# Seconds Sentinel spends between agreeing that the primary is down (ODOWN) and a promoted
# replica: the quorum's reports (about 1 s), the leader election and SLAVEOF NO ONE (about 1 s),
# and the app's Sentinel client asking again for the primary (about 1 s).
SENTINEL_FAILOVER_SECONDS = 3


def sentinel_timings(recovery_seconds: int | str) -> dict[str, int]:
    """Sentinel's down-after-milliseconds and failover-timeout from the one knob: the most
    seconds until the queue Redis takes writes again after its primary's host dies. At 10 s:
    7000 ms and 60000 ms (failover-timeout also spaces out retries of a failed failover)."""
    seconds = int(recovery_seconds)
    return {
        "down_after_ms": max(1000, (seconds - SENTINEL_FAILOVER_SECONDS) * 1000),
        "failover_timeout_ms": max(10000, seconds * 6000),
    }
