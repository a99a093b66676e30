"""RQ workers: one per systemd unit instance, with RQ's scheduler on, so delayed jobs run.

SimpleWorker runs jobs in the worker process itself (no fork per job): cheaper at high
throughput and keeps one stable pid per worker for the per-process metric files. A crash kills
the worker, systemd restarts it within seconds, and RQ moves the interrupted job to the failed
registry where its retries continue.
"""

from __future__ import annotations

import atexit
import logging
import os
import socket

from rq import Queue, SimpleWorker

from grimbots import metrics
from grimbots.db import get_db
from grimbots.logs import configure_logging
from grimbots.queues import QUEUE_NAMES, lanes_for
from grimbots.redis_pool import get_pools, queue_connection
from grimbots.settings import Settings

log = logging.getLogger(__name__)


def _count_failure(job, exc_type, exc_value, traceback) -> bool:
    metrics.JOBS_FAILED.labels(job.origin, job.func_name.rsplit(".", 1)[-1]).inc()
    return True  # let RQ's default handling (retry / failed registry) continue


def _mark_dead_on_exit() -> None:
    if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        from prometheus_client import multiprocess

        atexit.register(multiprocess.mark_process_dead, os.getpid())


def run(settings: Settings, queue_args: list[str], burst: bool = False) -> None:
    names = lanes_for(queue_args)
    configure_logging(settings.log_level)
    get_db(settings)
    get_pools(settings)
    _mark_dead_on_exit()
    conn = queue_connection()
    worker = SimpleWorker(
        [Queue(name, connection=conn) for name in names],
        connection=conn,
        name=f"{socket.gethostname()}.{'+'.join(queue_args)}.{os.getpid()}",
        exception_handlers=[_count_failure],
        default_worker_ttl=None,
    )
    log.info("worker starting", extra={"queues": names})
    worker.work(with_scheduler=True, burst=burst, logging_level=settings.log_level)


def enqueue_due_scheduled(include_future: bool = False) -> int:
    """Move scheduled jobs to their queues (what RQ's scheduler does when they are due)."""
    from datetime import UTC, datetime

    moved = 0
    conn = queue_connection()
    for name in QUEUE_NAMES:
        queue = Queue(name, connection=conn)
        registry = queue.scheduled_job_registry
        if include_future:
            due = registry.get_job_ids(0, -1)
        else:
            due = registry.get_jobs_to_schedule(datetime.now(UTC))
        for job_id in due:
            job = queue.fetch_job(job_id)
            registry.remove(job_id)
            if job is not None:
                queue.enqueue_job(job)
                moved += 1
    return moved


def drain_queues(include_scheduled: bool = False, rounds: int = 20) -> int:
    """Process every queued job in this process until the queues are empty (tests, tooling).

    With include_scheduled, jobs scheduled for later (downsells, retries) run now as well.
    Bounded by `rounds` so a job that keeps re-enqueueing itself cannot loop forever.
    """
    conn = queue_connection()
    processed = 0
    for _ in range(rounds):
        if include_scheduled:
            enqueue_due_scheduled(include_future=True)
        queues = [Queue(name, connection=conn) for name in QUEUE_NAMES]
        pending = sum(q.count for q in queues)
        if not pending:
            return processed
        worker = SimpleWorker(queues, connection=conn, exception_handlers=[_count_failure])
        worker.work(burst=True, logging_level="WARNING")
        processed += pending
    return processed
