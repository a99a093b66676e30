"""The patroni role's values derived from its knobs: Patroni's timings from the one recovery
knob, the failover bound the lab's test holds it to, etcd's client endpoints."""

from __future__ import annotations

from collections.abc import Iterable

# Patroni's documented lower bound for ttl (Patroni 3.2+ raises a smaller ttl to 20 silently).
PATRONI_MIN_TTL = 20
# Seconds a replica spends before promoting itself asking every other member for its WAL position
# (Patroni 3.0's REST call has a 2 s timeout, which the dead member always uses up).
PATRONI_MEMBER_CHECK_SECONDS = 2
# Seconds the app needs to find the new primary once it is promoted: libpq's connect_timeout (2 s)
# on the dead host, then a connect to the next one (the app retries a failed transaction once).
APP_RECONNECT_SECONDS = 3


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


def etcd_endpoints(addresses: Iterable[str], port: int | str) -> str:
    """etcd client URLs of every member, comma-separated (etcdctl --endpoints, Patroni)."""
    return ",".join(f"http://{a}:{int(port)}" for a in addresses)


# The Jinja filters this role's templates and tasks use (the platform role's filter plugin
# collects every role's FILTERS; pyinfra renders with the same plugin).
FILTERS = {
    "grimbots_patroni_timings": patroni_timings,
    "grimbots_failover_bound": failover_bound,
    "grimbots_etcd_endpoints": etcd_endpoints,
}
