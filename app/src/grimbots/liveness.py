"""Worker liveness: a heartbeat that does not wait for the job, and orphaned jobs taken up again
in seconds.

RQ alone notices a dead worker's job late: a SimpleWorker sends no heartbeat while it runs a
job, so the started-job registry keeps the job until its timeout plus 60 s has passed, and only
a worker's maintenance pass (every 10 minutes by default) moves it on. Here every worker runs a
small thread that, every TICK seconds:

* writes `gb:worker:<name>:alive` (TTL ALIVE_TTL) and RQ's own heartbeat, and registers the
  worker again when its RQ key is gone (a Redis restart lost it);
* once per REAP_EVERY across all workers, hands every started job whose worker is not alive
  to RQ's own abandoned-job handling (StartedJobRegistry.cleanup: retried while retries are
  left, else the failed registry);
* enqueues the reconcilers when they are due (`reconcile.schedule_due`).

So a job whose worker was killed runs again after at most ALIVE_TTL + REAP_EVERY + the first
retry interval (2 s): well under 30 s. `/health` counts only workers whose alive key exists.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Iterable

import redis
from rq import Queue, worker_registration
from rq.executions import Execution
from rq.registry import StartedJobRegistry
from rq.worker import BaseWorker

from grimbots import metrics

log = logging.getLogger(__name__)

ALIVE_TTL = 10
TICK = 3.0
REAP_EVERY = 5
# How long a reaper waits after (re)connecting before judging others: long enough for every
# live worker to beat again after Redis came back.
REAP_GRACE = 2 * TICK + 1
# Names of workers that keep an alive key; others (older versions) are judged by RQ's own key.
HEARTBEATING = "gb:workers:heartbeating"
REAPER_LOCK = "gb:workers:reaper"


def alive_key(worker_name: str) -> str:
    return f"gb:worker:{worker_name}:alive"


def is_alive(conn: redis.Redis, worker_name: str) -> bool:
    """True unless the worker certainly stopped beating (or RQ forgot it)."""
    if not worker_name:
        return False
    if conn.exists(alive_key(worker_name)):
        return True
    if conn.sismember(HEARTBEATING, worker_name):
        return False
    return bool(conn.exists(BaseWorker.redis_worker_namespace_prefix + worker_name))


def announce(conn: redis.Redis, worker_name: str) -> None:
    """Say this worker is alive for the next ALIVE_TTL seconds (and that it keeps saying so)."""
    with conn.pipeline() as pipe:
        pipe.set(alive_key(worker_name), "1", ex=ALIVE_TTL)
        pipe.sadd(HEARTBEATING, worker_name)
        pipe.execute()


def beat(conn: redis.Redis, worker: BaseWorker) -> None:
    """One heartbeat: alive key, RQ's heartbeat, and registration again after a Redis loss.

    RQ's own key is left alone until RQ registered the worker itself: a key written earlier
    would make RQ's registration fail ("an active worker with this name exists").
    """
    announce(conn, worker.name)
    if worker.birth_date is None:
        return
    if not conn.sismember(worker_registration.REDIS_WORKER_KEYS, worker.key):
        # Redis lost the registration (restarted without it). RQ's own heartbeat may already
        # have written a partial hash, so register_birth() would refuse: write it directly.
        log.warning("worker registration lost (Redis restarted?); registering again")
        with conn.pipeline() as pipe:
            pipe.hset(worker.key, mapping=worker.serialize())
            worker_registration.register(worker, pipe)
            pipe.expire(worker.key, worker.worker_ttl + 60)
            pipe.execute()
    else:
        worker.heartbeat()


def reap_orphans(
    conn: redis.Redis, queue_names: Iterable[str], exception_handlers: list | None = None
) -> int:
    """Give every started job of a dead worker to RQ's abandoned-job handling; returns how many."""
    reaped = 0
    for name in queue_names:
        registry = StartedJobRegistry(name, connection=conn)
        dead = []
        for job_id, execution_id in registry.get_job_and_execution_ids(cleanup=False):
            try:
                worker_name = Execution.fetch(execution_id, job_id, connection=conn).worker_name
            except Exception:  # noqa: BLE001 - a vanished execution record: its worker is gone
                worker_name = ""
            if not is_alive(conn, worker_name):
                dead.append(f"{job_id}:{execution_id}" if execution_id else job_id)
        if not dead:
            continue
        # Mark them expired and let RQ retry them (or fail them) exactly as it would later.
        conn.zadd(registry.key, dict.fromkeys(dead, 1), xx=True)
        registry.cleanup(timestamp=1, exception_handlers=exception_handlers)
        # A crash is not an error to back off from: a retry RQ scheduled for later runs now (the
        # dead worker may also have held the scheduler's lock for another minute).
        queue = Queue(name, connection=conn)
        scheduled = queue.scheduled_job_registry
        for entry in dead:
            job_id = entry.split(":", 1)[0]
            if job_id in scheduled.get_job_ids(cleanup=False):
                scheduled.remove(job_id)
                job = queue.fetch_job(job_id)
                if job is not None:
                    queue.enqueue_job(job)
        reaped += len(dead)
        metrics.JOBS_REQUEUED.labels(name).inc(len(dead))
        log.warning("requeued jobs of dead workers", extra={"queue": name, "jobs": len(dead)})
    return reaped


def forget_dead(conn: redis.Redis) -> None:
    """Drop names from the heartbeating set once RQ has forgotten the worker too."""
    for raw in conn.smembers(HEARTBEATING):
        name = raw.decode() if isinstance(raw, bytes) else raw
        if not conn.exists(BaseWorker.redis_worker_namespace_prefix + name) and not conn.exists(
            alive_key(name)
        ):
            conn.srem(HEARTBEATING, name)


class Heartbeat(threading.Thread):
    """The worker's liveness thread (daemon: it dies with the process, as it must)."""

    def __init__(
        self,
        conn: redis.Redis,
        worker_ref: Callable[[], BaseWorker | None],
        on_tick: Callable[[redis.Redis], None] | None = None,
        exception_handlers: list | None = None,
    ):
        super().__init__(name="grimbots-heartbeat", daemon=True)
        self.conn = conn
        self.worker_ref = worker_ref
        self.on_tick = on_tick
        self.exception_handlers = exception_handlers
        self.stopping = threading.Event()
        self._connected_since: float | None = None

    def run(self) -> None:
        while True:
            try:
                self.tick()
            except Exception as exc:  # noqa: BLE001 - Redis away: keep beating when it returns
                self._connected_since = None
                log.warning("worker heartbeat failed: %s", type(exc).__name__)
            if self.stopping.wait(TICK):
                return

    def tick(self) -> None:
        worker = self.worker_ref()
        if worker is None:
            return
        beat(self.conn, worker)
        now = time.monotonic()
        if self._connected_since is None:
            self._connected_since = now
        # After an outage, wait until every live worker had the time to beat again.
        if now - self._connected_since < REAP_GRACE:
            return
        if self.conn.set(REAPER_LOCK, worker.name, nx=True, ex=REAP_EVERY):
            names = [q.name for q in Queue.all(connection=self.conn)]
            reap_orphans(self.conn, names, self.exception_handlers)
            forget_dead(self.conn)
        if self.on_tick is not None:
            self.on_tick(self.conn)

    def stop(self) -> None:
        self.stopping.set()
