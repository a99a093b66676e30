"""Jobs that failed because a dependency was down are retried until it is back.

RQ's own retry budget (DEFAULT_RETRY: 5 tries over about 4 minutes) is for bugs and flukes. A
database outage of a few minutes, a Redis Cluster down or a Telegram 429 with a long
retry_after would spend it and park the job in the failed registry, where nothing runs it
again: the update it carried, answered 200, would be lost. So an RQ exception handler
(`on_failure`, in every worker) sorts each failure:

* a dependency outage (`outage_reason`): the job is rescheduled with capped exponential
  backoff (BASE doubling up to CAP, at least Telegram's retry_after up to CAP) without spending
  its budget, for as long as it takes; counted in `grimbots_job_retries_total{reason}`;
* anything else (a bug): RQ's budget applies; a job that ends in the failed registry is
  counted in `grimbots_job_failures_total{queue,function}`.

Outcomes that prove the work impossible (a 403 from a user who blocked the bot, a 4xx) are
settled in the outbox and never raised, so they are not retried.
"""

from __future__ import annotations

import redis
from rq.job import Job
from sqlalchemy import exc as sa_exc

from grimbots import metrics

BASE = 2.0
CAP = 300.0
# Another sender's claim ends with its run or, if that run died, with its lease (60 s): try
# again often, or a welcome waits a doubling backoff past the lease (64 s, then 128 s).
CLAIM_BUSY_CAP = 10.0
META_OUTAGES = "gb_outage_retries"
META_INTERVALS = "gb_retry_intervals"
_REDIS_OUTAGES = (
    redis.ConnectionError,
    redis.TimeoutError,
    redis.exceptions.ClusterDownError,
    redis.exceptions.TryAgainError,
    redis.exceptions.MasterDownError,
    redis.exceptions.ReadOnlyError,
)
_DATABASE_OUTAGES = (
    sa_exc.OperationalError,
    sa_exc.InterfaceError,
    sa_exc.TimeoutError,  # the pool waited in vain for a connection
    sa_exc.DisconnectionError,
)


def outage_reason(exc: BaseException | None) -> str | None:
    """The dependency whose outage `exc` shows ("database", "redis", "telegram",
    "claim_busy"), or None for any other failure (a bug). Follows the exception's causes."""
    from grimbots.outbox import ClaimBusy
    from grimbots.telegram import TransientError

    seen = 0
    while exc is not None and seen < 8:
        if isinstance(exc, TransientError):
            return "telegram"
        if isinstance(exc, ClaimBusy):
            return "claim_busy"
        if isinstance(exc, _REDIS_OUTAGES):
            return "redis"
        if isinstance(exc, _DATABASE_OUTAGES) or (
            isinstance(exc, sa_exc.DBAPIError) and exc.connection_invalidated
        ):
            return "database"
        exc = exc.__cause__ or exc.__context__
        seen += 1
    return None


def backoff(outages: int, retry_after: float | None = None) -> int:
    """Seconds before the next try after `outages` consecutive outage failures (whole seconds:
    RQ's scheduler counts in them)."""
    delay = min(CAP, BASE * 2 ** min(outages, 16))
    if retry_after:
        delay = max(delay, min(CAP, retry_after))
    return max(1, int(delay))


def on_failure(job: Job, exc_type, exc_value, traceback) -> bool:
    """RQ exception handler: an outage is retried without spending the job's budget."""
    reason = outage_reason(exc_value)
    if reason is None:
        if META_INTERVALS in job.meta:  # give the budget back its own intervals
            job.retry_intervals = job.meta.pop(META_INTERVALS)
        job.meta.pop(META_OUTAGES, None)
        if not job.should_retry:
            metrics.JOB_FAILURES.labels(job.origin, job.func_name.rsplit(".", 1)[-1]).inc()
        return True
    outages = int(job.meta.get(META_OUTAGES, 0))
    job.meta.setdefault(META_INTERVALS, job.retry_intervals)
    job.meta[META_OUTAGES] = outages + 1
    # RQ's retry() spends one try and picks intervals[len - retries_left]: with one interval
    # and one more try, that is this delay, and the budget is left as it was.
    delay = backoff(outages, getattr(exc_value, "retry_after", None))
    if reason == "claim_busy":
        delay = min(delay, int(CLAIM_BUSY_CAP))
    job.retry_intervals = [delay]
    job.retries_left = (job.retries_left or 0) + 1
    metrics.JOB_RETRIES.labels(reason).inc()
    return True
