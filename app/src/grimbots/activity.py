"""Active users: distinct Telegram users whose updates were processed in the last few minutes.

Workers record each user in a HyperLogLog per minute on the state Redis (12 KB per key, about
1% error, however many users); /metrics reports the union of the last WINDOW_MINUTES. Not on
the webhook path: the intake stays one round trip. The keys share one hash tag so the union is
a single PFCOUNT in cluster mode too.
"""

from __future__ import annotations

import logging
import time

from redis.exceptions import RedisError

from grimbots.redis_pool import state

log = logging.getLogger(__name__)

WINDOW_MINUTES = 5
# A bucket lives past the window so a scrape at any second sees whole minutes.
_BUCKET_TTL = (WINDOW_MINUTES + 2) * 60


def _key(minute: int) -> str:
    return f"gb:{{active}}:{minute}"


def seen(user_id: int, now: float | None = None) -> None:
    """Count a user as active this minute. Best effort: a Redis error never fails the job."""
    key = _key(int((time.time() if now is None else now) // 60))
    try:
        pipe = state().pipeline(transaction=False)
        pipe.pfadd(key, user_id)
        pipe.expire(key, _BUCKET_TTL)
        pipe.execute()
    except RedisError as exc:
        log.debug("active-user count skipped: %s", type(exc).__name__)


def count(now: float | None = None) -> int:
    """Distinct users seen in the current minute and the WINDOW_MINUTES - 1 before it."""
    minute = int((time.time() if now is None else now) // 60)
    return int(state().pfcount(*(_key(minute - i) for i in range(WINDOW_MINUTES))))
