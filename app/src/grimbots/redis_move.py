"""Move the app's Redis data off the phase-2 Redis onto phase 3's: state to the Redis Cluster,
queues to the queue Redis (Sentinel), once and losslessly.

Phases 1-2 keep everything in one Redis. Phase 3 splits it: RQ's keys and what the intake script
writes beside a job go to the queue Redis, every other key of the app to the cluster. Each key is
copied with DUMP/RESTORE, so its type, content and remaining time to live come along untouched:
queued jobs, downsells scheduled hours ahead (RQ's scheduled registries), tracking tokens, dedup
locks. The old processes' registrations and locks are not copied: they end with those processes.

The source must be quiet: no live worker and no job started. `grimbots-manage move-redis` is run
with the app stopped (systemd stops a worker only after its job finished), so in-flight work is
done before anything is read. A marker on the queue Redis, written last, makes a second run a
no-op; until it is written, a rerun copies again (RESTORE ... REPLACE), which is safe because
nothing writes to the new Redis before the app is switched to it.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

import redis
from rq import Queue
from rq.registry import StartedJobRegistry

from grimbots import liveness
from grimbots.queues import QUEUE_NAMES

# Keys that live on the queue Redis: RQ's own, and the intake's (its script takes the dedup locks
# of layers 1-3 in the same step as the job), the enqueue and reconciler locks and the workers'
# liveness marks. Every other app key is state. tests/test_redis_move.py runs the app with the
# two on separate Redis databases and checks this split against the keys it really writes.
QUEUE_KEY = re.compile(
    r"^(rq:|gb:intake:|gb:enqueue:|gb:reconcile:|gb:workers:|gb:worker:"
    r"|gb:\{bot:\d+\}:(upd|msg|start):)"
)
# Registrations and locks of the old processes: copying them would show dead workers alive.
EPHEMERAL_KEY = re.compile(
    r"^(rq:workers|rq:worker:|rq:scheduler-lock:|rq:scheduler_instance:|rq:clean_registries:"
    r"|gb:workers:|gb:worker:)"
)
MOVED_MARKER = "gb:moved:phase3"


class SourceBusy(RuntimeError):
    """The old Redis still has live workers or started jobs: stop the app first."""


@dataclass
class MoveReport:
    queue_keys: int = 0
    state_keys: int = 0
    skipped_ephemeral: int = 0
    already_done: bool = False
    jobs_waiting: dict[str, int] = field(default_factory=dict)
    jobs_scheduled: dict[str, int] = field(default_factory=dict)


def is_queue_key(name: str) -> bool:
    return QUEUE_KEY.match(name) is not None


def busy(source: redis.Redis) -> list[str]:
    """Why the source is not quiet yet (empty when it is)."""
    reasons = []
    for name in QUEUE_NAMES:
        started = StartedJobRegistry(name, connection=source).count
        if started:
            reasons.append(f"{started} job(s) started on queue {name}")
    workers = [
        w.decode()
        for w in source.smembers("rq:workers")
        if liveness.is_alive(source, w.decode().split(":", 2)[-1])
    ]
    if workers:
        reasons.append(f"{len(workers)} worker(s) alive")
    return reasons


def _copy(source: redis.Redis, dest, key: bytes) -> bool:
    """DUMP/RESTORE one key with its remaining time to live; False if it expired meanwhile."""
    with source.pipeline(transaction=True) as pipe:
        pipe.dump(key)
        pipe.pttl(key)
        payload, ttl = pipe.execute()
    if payload is None or ttl == -2:
        return False
    dest.restore(key, max(ttl, 0), payload, replace=True)
    return True


def move(source: redis.Redis, state, queue: redis.Redis, *, scan_count: int = 1000) -> MoveReport:
    """Copy every app key of `source` to its new home. `source` and `queue` must return bytes."""
    report = MoveReport()
    if queue.exists(MOVED_MARKER):
        report.already_done = True
        return report
    reasons = busy(source)
    if reasons:
        raise SourceBusy("; ".join(reasons))
    for key in source.scan_iter(count=scan_count):
        name = key.decode()
        if EPHEMERAL_KEY.match(name):
            report.skipped_ephemeral += 1
        elif is_queue_key(name):
            report.queue_keys += _copy(source, queue, key)
        elif name.startswith("gb:"):
            report.state_keys += _copy(source, state, key)
    for name in QUEUE_NAMES:
        q = Queue(name, connection=queue)
        report.jobs_waiting[name] = q.count
        report.jobs_scheduled[name] = q.scheduled_job_registry.count
    queue.set(MOVED_MARKER, "1")
    return report
