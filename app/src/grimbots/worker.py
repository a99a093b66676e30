"""RQ workers: one per systemd unit instance, with RQ's scheduler on, so delayed jobs run.

SimpleWorker runs jobs in the worker process itself (no fork per job): cheaper at high
throughput and keeps one stable pid per worker for the per-process metric files. Next to it a
liveness thread (`liveness.Heartbeat`) beats every few seconds whatever the job is doing, takes
up the jobs of workers that died (SIGKILL, OOM) within seconds instead of RQ's maintenance cycle,
registers the worker again after a Redis restart, and enqueues the reconcilers when they are due.

A Redis outage does not end the process: when RQ's work loop gives up on a Redis error, the
worker waits for Redis and starts a fresh work loop under a new name (the job it was running is
taken up by the liveness thread of whichever worker notices first). Only a stop request (SIGTERM:
finish the current job, then exit) or burst mode ends `run`.
"""

from __future__ import annotations

import atexit
import contextlib
import ctypes
import ctypes.util
import logging
import os
import signal
import socket
import time

import redis
from rq import Queue, SimpleWorker

from grimbots import liveness, metrics, reconcile, retry
from grimbots.db import get_db
from grimbots.logs import configure_logging
from grimbots.queues import QUEUE_NAMES, lanes_for
from grimbots.redis_pool import get_pools, queue_connection
from grimbots.settings import Settings

log = logging.getLogger(__name__)

# RQ's worker key TTL (the liveness thread renews it during long jobs as well).
WORKER_TTL = 60
MAINTENANCE_INTERVAL = 30
PR_SET_PDEATHSIG = 1  # linux/prctl.h
# Pauses between work loops while Redis is away (bounded backoff).
RESTART_BACKOFF = (1.0, 2.0, 5.0)


def _count_failure(job, exc_type, exc_value, traceback) -> bool:
    metrics.JOBS_FAILED.labels(job.origin, job.func_name.rsplit(".", 1)[-1]).inc()
    return True  # let RQ's default handling (retry / failed registry) continue


# Every worker's handlers, in order: count the failure, then keep outages out of the budget.
EXCEPTION_HANDLERS = [_count_failure, retry.on_failure]


def _mark_dead_on_exit() -> None:
    if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        from prometheus_client import multiprocess

        atexit.register(multiprocess.mark_process_dead, os.getpid())


def _die_with_parent(parent_pid: int):
    """An at-fork hook for RQ's scheduler child: die when this worker dies.

    Killed with SIGKILL, the worker cannot take its forked scheduler along; the orphan would
    keep the worker's inherited Redis socket open, and the BLPOP pending on it would hand the
    next queued job to a process that no longer exists (the job lost). PR_SET_PDEATHSIG makes
    the kernel kill the child with its parent, which closes that socket and leaves the job in
    its queue.
    """

    def hook() -> None:
        with contextlib.suppress(Exception):
            libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
            libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
        if os.getppid() != parent_pid:  # the parent died before the hook ran
            os._exit(1)

    return hook


def _make_worker(conn, names: list[str], queue_args: list[str], generation: int) -> SimpleWorker:
    suffix = f".{generation}" if generation else ""
    return SimpleWorker(
        [Queue(name, connection=conn) for name in names],
        connection=conn,
        name=f"{socket.gethostname()}.{'+'.join(queue_args)}.{os.getpid()}{suffix}",
        exception_handlers=EXCEPTION_HANDLERS,
        worker_ttl=WORKER_TTL,
        # RQ re-acquires the scheduler lock only in its maintenance pass: after a Redis restart
        # scheduled jobs (downsells, retries) wait at most this long, not 10 minutes.
        maintenance_interval=MAINTENANCE_INTERVAL,
        # Job descriptions carry the job's arguments (users' messages): never in the logs.
        log_job_description=False,
    )


def _pause(attempt: int) -> None:
    time.sleep(RESTART_BACKOFF[min(attempt, len(RESTART_BACKOFF) - 1)])


def run(settings: Settings, queue_args: list[str], burst: bool = False) -> None:
    names = lanes_for(queue_args)
    configure_logging(settings.log_level)
    get_db(settings)
    get_pools(settings)
    _mark_dead_on_exit()
    if hasattr(os, "register_at_fork"):
        os.register_at_fork(after_in_child=_die_with_parent(os.getpid()))
    conn = queue_connection()
    current: dict = {"worker": None}
    heartbeat = liveness.Heartbeat(
        conn,
        lambda: current["worker"],
        on_tick=reconcile.schedule_due,
        exception_handlers=EXCEPTION_HANDLERS,
    )
    if not burst:
        heartbeat.start()
    generation = failures = 0
    try:
        while True:
            worker = _make_worker(conn, names, queue_args, generation)
            current["worker"] = worker
            with contextlib.suppress(redis.RedisError):
                liveness.announce(conn, worker.name)  # counted (and judged) from now on
            log.info("worker starting", extra={"queues": names, "worker": worker.name})
            try:
                worker.work(with_scheduler=True, burst=burst, logging_level=settings.log_level)
            except redis.RedisError as exc:
                # Raised from RQ's setup or teardown while Redis is away.
                log.warning("worker loop ended on a Redis error: %s", type(exc).__name__)
            # SIGTERM/SIGINT: RQ records when a stop was asked for (idle or busy).
            if burst or worker._stop_requested or worker._shutdown_requested_date is not None:
                return
            current["worker"] = None
            log.warning("worker loop ended without a stop request; starting it again")
            _pause(failures)
            failures += 1
            generation += 1
    finally:
        heartbeat.stop()


def run_maintenance() -> dict:
    """One maintenance pass, in this process: what the workers' liveness threads and the
    scheduled reconcilers do over time (tests, tooling, the fault-injection suite).

    Jobs of dead workers go back to RQ's retry handling, then every reconciler runs once.
    """
    conn = queue_connection()
    names = [q.name for q in Queue.all(connection=conn)]
    out: dict = {"requeued": liveness.reap_orphans(conn, names, EXCEPTION_HANDLERS)}
    for fn in reconcile.RECONCILERS:
        out[fn.__name__] = fn()
    return out


def enqueue_due_scheduled(include_future: bool = False, until: float | None = None) -> int:
    """Move scheduled jobs to their queues (what RQ's scheduler does when they are due): those
    due by `until` (epoch seconds; default now), or every one of them with include_future."""
    moved = 0
    conn = queue_connection()
    for name in QUEUE_NAMES:
        queue = Queue(name, connection=conn)
        registry = queue.scheduled_job_registry
        if include_future:
            due = registry.get_job_ids(0, -1)
        else:
            # RQ scores the registry in whole epoch seconds; None means now.
            due = registry.get_jobs_to_schedule(None if until is None else int(until))
        for job_id in due:
            job = queue.fetch_job(job_id)
            registry.remove(job_id)
            if job is not None:
                queue.enqueue_job(job)
                moved += 1
    return moved


class _DrainWorker(SimpleWorker):
    """A burst worker for in-process draining: no command channel (nobody sends it commands),
    so its teardown never waits on RQ's pub/sub thread, which may sit in a 60 s read."""

    def subscribe(self) -> None:
        self.pubsub_thread = None

    def unsubscribe(self) -> None:
        pass

    # RQ's loop waits out a Redis outage between tries, up to a minute apart: a drain tries
    # again soon (the first wait is RQ's 1 s), as a worker would once Redis is back.
    max_connection_wait_time = 0.05


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
        worker = _DrainWorker(queues, connection=conn, exception_handlers=EXCEPTION_HANDLERS)
        worker.work(burst=True, logging_level="WARNING")
        processed += pending
    return processed
