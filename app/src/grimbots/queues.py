"""RQ queues: names, the worker lanes, and enqueue helpers.

RQ runs on the queue Redis (one URL, or Sentinel in phase 3). Every worker runs RQ's scheduler,
so jobs scheduled for later (downsells) always have a scheduler watching their queue.
"""

from __future__ import annotations

from datetime import timedelta

from rq import Queue, Retry, Worker
from rq.exceptions import NoSuchJobError
from rq.job import Job, JobStatus

from grimbots import job_contract, liveness
from grimbots.redis_pool import get_pools, queue_connection

TASKS, GATEWAY, WEBHOOK, TRACKING, MARATHON = "tasks", "gateway", "webhook", "tracking", "marathon"
QUEUE_NAMES = (TASKS, GATEWAY, WEBHOOK, TRACKING, MARATHON)

# What a worker started for a queue listens to, in priority order. A `tasks` worker also drains
# the low-volume `tracking` and `marathon` queues, so the default worker set covers every queue.
WORKER_LANES = {
    TASKS: (TASKS, TRACKING, MARATHON),
    GATEWAY: (GATEWAY,),
    WEBHOOK: (WEBHOOK,),
    TRACKING: (TRACKING,),
    MARATHON: (MARATHON,),
}

# Jobs that fail (Redis or database briefly away, Telegram down) are retried with backoff.
DEFAULT_RETRY = Retry(max=5, interval=[2, 10, 30, 60, 120])


def get_queue(name: str) -> Queue:
    if name not in QUEUE_NAMES:
        raise ValueError(f"unknown queue {name!r}; queues are {', '.join(QUEUE_NAMES)}")
    return Queue(name, connection=queue_connection())


def default_job_timeout() -> int:
    """Seconds RQ lets one job run (GRIMBOTS_JOB_TIMEOUT; the worker units' stop timeout is
    derived from the same inventory value, so a stopping worker can finish its job)."""
    return get_pools().settings.job_timeout


def enqueue(queue: str, func, *args, job_timeout: int | None = None, **kwargs):
    job_contract.check(func, args)  # old and new workers share the queue during an update
    return get_queue(queue).enqueue(
        func,
        *args,
        retry=DEFAULT_RETRY,
        job_timeout=job_timeout or default_job_timeout(),
        **kwargs,
    )


def enqueue_in(queue: str, delay: timedelta, func, *args, **kwargs):
    job_contract.check(func, args)
    kwargs.setdefault("job_timeout", default_job_timeout())
    return get_queue(queue).enqueue_in(delay, func, *args, retry=DEFAULT_RETRY, **kwargs)


ENQUEUE_LOCK_TTL = 10
_IN_FLIGHT = {JobStatus.QUEUED, JobStatus.STARTED, JobStatus.SCHEDULED, JobStatus.DEFERRED}


def in_flight(job_id: str) -> bool:
    """True while the job with this id is queued, scheduled, deferred or running."""
    try:
        job = Job.fetch(job_id, connection=queue_connection())
    except NoSuchJobError:
        return False
    return job.get_status(refresh=False) in _IN_FLIGHT


def enqueue_unique(
    queue: str, job_id: str, func, *args, job_timeout: int | None = None, **kwargs
) -> bool:
    """Enqueue under a fixed job id unless that job is still in flight; True when enqueued.

    Lets reconcilers and retried producers ask for a step again without stacking copies of it
    (a job that finished or failed for good may be asked for again).
    """
    conn = queue_connection()
    lock = f"gb:enqueue:{job_id}"
    # Check-then-enqueue under a short lock: two producers never push the same id twice (two
    # copies of one job would each take the other's outbox claim for its own earlier run).
    if not conn.set(lock, "1", nx=True, ex=ENQUEUE_LOCK_TTL):
        return False
    try:
        if in_flight(job_id):
            return False
        enqueue(queue, func, *args, job_id=job_id, job_timeout=job_timeout, **kwargs)
        return True
    finally:
        conn.delete(lock)


def lanes_for(queue_args: list[str]) -> list[str]:
    """Queues a worker started with these queue arguments listens to (validated, de-duplicated)."""
    out: list[str] = []
    for name in queue_args:
        if name not in WORKER_LANES:
            raise ValueError(f"unknown queue {name!r}; queues are {', '.join(QUEUE_NAMES)}")
        for lane in WORKER_LANES[name]:
            if lane not in out:
                out.append(lane)
    return out


def queue_overview() -> dict[str, dict[str, int]]:
    """Depth and listening workers per queue (for /health and /metrics)."""
    conn = queue_connection()
    overview = {name: {"depth": 0, "workers": 0} for name in QUEUE_NAMES}
    for name in QUEUE_NAMES:
        overview[name]["depth"] = Queue(name, connection=conn).count
    for worker in Worker.all(connection=conn):
        # Counted from live heartbeats: a killed worker drops out within seconds, not after
        # RQ's worker TTL.
        if not liveness.is_alive(conn, worker.name):
            continue
        for name in worker.queue_names():
            if name in overview:
                overview[name]["workers"] += 1
    return overview
