"""The queue_redis role's derived values: Sentinel's timings from the one recovery knob."""

from __future__ import annotations

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


# The Jinja filters this role's templates and tasks use (the platform role's filter plugin
# collects every role's FILTERS; pyinfra renders with the same plugin).
FILTERS = {
    "grimbots_sentinel_timings": sentinel_timings,
}
