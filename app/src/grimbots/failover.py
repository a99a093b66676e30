"""Ride out a failover of the Redis the webhook intake uses, inside the request.

When the queue primary is lost, Sentinel promotes a replica within seconds; when a Cluster
master is lost, its replica takes over its slots. Until then every intake call fails, and each
failure disconnects the connection it used: the next attempt connects again, asking Sentinel
for the primary (redis-py drops the pool's idle connections when the primary changed) or the
cluster for its slots. So a request tries again after short pauses, within FAILOVER_BUDGET
seconds, before it answers 503 and leaves the update to Telegram's redelivery.

Only errors a failover produces are retried; a script or data error answers at once. A retry
never doubles an update: the intake's write is one Lua script, all or nothing, and an attempt
whose reply was lost left the job and its lock together, so the next attempt finds them and is
answered as a duplicate.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import TypeVar

from redis.exceptions import (
    ClusterDownError,
    ConnectionError,
    ReadOnlyError,
    TimeoutError,
    TryAgainError,
)

T = TypeVar("T")

# Seconds one request may spend retrying; the pauses before each further attempt (their sum
# stays within the budget, so attempts are bounded: one plus one per pause).
FAILOVER_BUDGET = 2.5
PAUSES = (0.05, 0.1, 0.2, 0.3, 0.4, 0.5, 0.5)
# Connection refused or lost, a timeout, the old primary demoted (READONLY; redis-py's Sentinel
# connection turns it into a ConnectionError), the cluster without a master for a slot yet.
FAILOVER_ERRORS = (ConnectionError, TimeoutError, ReadOnlyError, ClusterDownError, TryAgainError)


def deadline() -> float:
    """The monotonic time after which no further attempt starts."""
    return time.monotonic() + FAILOVER_BUDGET


def retrying(call: Callable[[], T], until: float) -> T:
    """call(), tried again after each pause while it fails as a failover does and `until`
    (a `deadline()`) leaves room for the pause; the last failure propagates."""
    for pause in PAUSES:
        try:
            return call()
        except FAILOVER_ERRORS:
            if time.monotonic() + pause > until:
                raise
        time.sleep(pause)
    return call()
