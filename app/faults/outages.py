"""Faults played on an in-process drain: a database outage longer than RQ's retry budget, two
live runs of one job (a worker cut off from Redis is taken for dead and its job run again
while it still runs), and Redis writes lost on a failover (`drain_losing_redis_writes`).

`db_outage`: every session the app opens fails for `tries` drain passes; after each pass the
retries the jobs scheduled for the outage are made due at once (other scheduled jobs, such as
downsells, keep their time), so every job that ran tries far more often than its budget of
DEFAULT_RETRY.max retries. The harness's own reads are spared.

`double_run`: the first job waiting on the webhook (else tasks) queue is run in a thread that
stalls in the rate limiter before its first send; meanwhile the queues are drained as usual, so
the same job runs again (what the reaper does when a heartbeat is lost) and completes; then the
stale run resumes. The invariants (no chat gets a message twice, every start one welcome) say
whether the fencing held.
"""

from __future__ import annotations

import contextlib
import threading
import time

import redis
from rq import Queue
from rq.job import Job

from faults.inject import DatabaseOutage
from grimbots import retry
from grimbots.queues import QUEUE_NAMES, TASKS, WEBHOOK
from grimbots.redis_pool import queue_connection
from grimbots.telegram import RateLimiter

DB_OUTAGE = DatabaseOutage()
STALL_WAIT = 10.0


def move_outage_retries(conn) -> int:
    """Make the retries scheduled because of an outage due now; returns how many moved."""
    moved = 0
    for name in QUEUE_NAMES:
        queue = Queue(name, connection=conn)
        registry = queue.scheduled_job_registry
        for job_id in registry.get_job_ids(0, -1):
            job = queue.fetch_job(job_id)
            if job is not None and retry.META_OUTAGES in job.meta:
                registry.remove(job_id)
                queue.enqueue_job(job)
                moved += 1
    return moved


def drain_through_db_outage(run, tries: int) -> None:
    """Drain the queues `tries` times over with the database down, then bring it back."""
    DB_OUTAGE.install()
    DB_OUTAGE.spared = {id(run.hdb)}
    DB_OUTAGE.failed = 0
    DB_OUTAGE.down = True
    try:
        for _ in range(tries):
            run._drain()
            if not move_outage_retries(run.rq) and not run._queued():
                break
    finally:
        DB_OUTAGE.down = False
    if DB_OUTAGE.failed:
        run.fired["db_outage"] += 1


def _first_queued_job(conn) -> Job | None:
    for name in (WEBHOOK, TASKS):
        ids = Queue(name, connection=conn).get_job_ids(0, 0)
        if ids:
            with contextlib.suppress(Exception):
                return Job.fetch(ids[0], connection=conn)
    return None


def drain_with_a_stale_run(run) -> None:
    """Drain while a stale run of the first queued job is stalled before its first send."""
    job = _first_queued_job(run.rq)
    if job is None:
        run._drain()
        return
    job.connection = queue_connection()  # the stale run is the app's code: faults reach it
    stalled, resume = threading.Event(), threading.Event()
    original = RateLimiter.acquire

    def acquire(limiter, *args, **kwargs):
        if threading.current_thread().name == "stale-run":
            stalled.set()
            resume.wait(STALL_WAIT * 3)
        return original(limiter, *args, **kwargs)

    def stale() -> None:
        try:
            job.perform()
        except BaseException as exc:  # noqa: BLE001 - ClaimLost: the rerun owns the message
            run.notes.append(f"stale run ended: {type(exc).__name__}")

    RateLimiter.acquire = acquire
    thread = threading.Thread(target=stale, name="stale-run", daemon=True)
    try:
        thread.start()
        deadline = time.monotonic() + STALL_WAIT
        while not stalled.is_set() and thread.is_alive() and time.monotonic() < deadline:
            stalled.wait(0.05)
        run._drain()  # the job's second run, and everything else queued
    finally:
        resume.set()
        thread.join(STALL_WAIT * 3)
        RateLimiter.acquire = original
    if stalled.is_set():
        run.fired["double_run"] += 1


def drain_after_long_429(run, retry_after: int) -> None:
    """Telegram answers the bot's next send 429 with a retry_after longer than RQ's whole retry
    budget; the queues drain. The job must be retried outside the budget and its message go out
    once, after the hold (which passes only as the harness lets time pass: `age_rate_holds`).
    Counted as fired from the fake's record (`count_telegram_faults`)."""
    run.fake.add_fault(status=429, retry_after=retry_after, count=1, token=run.fault_token)
    run._drain()


def drain_paying_before_pix(run, lead: int) -> None:
    """`pay_before_pix`: the queues drain while the lead's chat cannot be sent to (its sends
    find the rate limiter's Redis unreachable: nothing goes out, the jobs retry later), so the
    charge is created and its PIX code left unsent; the customer pays it meanwhile; then sends
    resume. The retried job must not send the code of a paid charge (invariant: no PIX code
    after the charge was paid). Fired when a pending charge was paid before its code went out."""
    chat = run.chats[lead]
    acquire = RateLimiter.acquire

    def unreachable_for_the_chat(limiter, bot_id, chat_id, *args, **kwargs):
        if chat_id == chat:
            raise redis.ConnectionError("rate limiter unreachable (injected: pay_before_pix)")
        return acquire(limiter, bot_id, chat_id, *args, **kwargs)

    RateLimiter.acquire = unreachable_for_the_chat
    try:
        run._drain()
    finally:
        RateLimiter.acquire = acquire
    if run.pay_unseen(lead):
        run.fired["pay_before_pix"] += 1


def age_rate_holds(r, ms: int) -> list[tuple[float, float, str]]:
    """Time passes for the bots' 429 holds (absolute Redis-clock deadlines, not TTLs): each
    moves `ms` earlier and is dropped once past. Returns, per hold, (now, the wall time it
    ends, its key): now for a dropped one, else its new deadline, which real time may reach
    before the harness ages it again (a sender then waits the rest out in the limiter)."""
    now_s, now_us = r.time()
    now = now_s * 1000 + now_us // 1000
    ends = []
    for key in r.scan_iter(match="gb:*:rl:hold", count=1000):
        raw = r.get(key)
        if raw is None:
            continue
        until = float(raw) - ms
        if until <= now:
            r.delete(key)
            ends.append((now / 1000, now / 1000, key))
        else:
            r.set(key, int(until), px=int(until - now) + 1000)
            ends.append((now / 1000, until / 1000, key))
    return ends


def set_active(run, active: bool, bot=None) -> bool:
    """The seller switches a bot (default: bot 0) off or on through the API, retrying a 5xx
    like a client."""
    bot = bot or run.bots[0]
    auth = {"Authorization": f"Bearer {bot.api_token}"}
    for _ in range(12):
        try:
            status = run.client.patch(
                f"/api/bots/{bot.bot_id}", json={"active": active}, headers=auth
            ).status_code
        except Exception as exc:  # noqa: BLE001 - an escaped exception is a 500 to the seller
            run.notes.append(f"PATCH bot raised {type(exc).__name__}: {exc}")
            status = 500
        if status == 200:
            return True
    run.notes.append(f"PATCH bot {bot.bot_id} active={active} never answered 200")
    return False


def pay_while_paused(run, lead: int, twin: bool) -> None:
    """The seller deactivates the lead's bot, the customer pays and the queues drain (the
    delivery is held), then the seller reactivates it: the held delivery must go out once,
    after that. The window in which no delivery may reach the chat goes to `run.paused`."""
    bot = run.bot(lead)
    if not set_active(run, False, bot):
        run._pay(lead, twin=twin)
        return
    start = time.time()
    run._pay(lead, twin=twin)
    run._drain()
    end = time.time()
    run.paused.append((start, end, bot.bot_id))
    if not set_active(run, True, bot):
        run.reactivate.append(bot)  # the seller tries again once the faults are over
    if run.paid_at.get(run.chats[lead], 0.0) >= start:
        run.fired["bot_paused"] += 1


def drain_losing_redis_writes(run, lost: str) -> None:
    """`redis_data_loss`: the queues drain, then Redis fails over to a replica that had none of
    the drain's writes (acknowledged to the app, then gone). "all": every key goes back to how
    it was before the drain (jobs that ran are queued again, results, rate-limiter counts and
    locks gone); "state": only the bots' keys on the state Redis (`gb:{bot:<id>}:*`: send
    locks, last-start throttle, rate limiter, 429 holds, bot cache) go back, while the queue
    Redis keeps RQ's writes. The database keeps everything: the outbox rows must stop every
    resend."""
    pattern = "*" if lost == "all" else "gb:{bot:*"
    before = snapshot(run.rq, pattern)
    started = time.monotonic()
    run._drain()
    lost_keys = roll_back(run.rq, pattern, before, time.monotonic() - started)
    if lost_keys:
        run.fired["redis_data_loss"] += 1
        run.rate_resets += [(time.time(), window) for window in rate_resets(lost_keys)]


def snapshot(conn, pattern: str) -> dict[bytes, tuple[int, bytes]]:
    """Every key matching `pattern`: (milliseconds left to live, 0 for none; DUMP payload)."""
    out = {}
    for key in conn.scan_iter(match=pattern, count=1000):
        ttl, payload = conn.pttl(key), conn.dump(key)
        if payload is not None and ttl != -2:
            out[key] = (max(ttl, 0), payload)
    return out


def roll_back(conn, pattern: str, before: dict, elapsed: float) -> list[str]:
    """Put the keys matching `pattern` back as `before` had them (a key `before` lacked is
    deleted; expiries keep running); returns the keys the rollback changed."""
    changed = []
    now = snapshot(conn, pattern)
    for key in now.keys() - before.keys():
        conn.delete(key)
        changed.append(key.decode())
    for key, (ttl, payload) in before.items():
        if key in now and now[key][1] == payload:
            continue
        left = ttl - int(elapsed * 1000) if ttl else 0
        if ttl and left <= 0:
            continue  # it would have expired on the replica too
        conn.restore(key, left, payload, replace=True)
        changed.append(key.decode())
    return changed


def rate_resets(keys: list[str]) -> list[str]:
    """The rate-limiter windows among rolled-back keys: a chat id, or "bot:<id>" for a bot's."""
    out = []
    for key in keys:
        head, rl, rest = key.partition(":rl:")
        if rl and rest.startswith("chat:"):
            out.append(rest.removeprefix("chat:"))
        elif rl and rest == "bot":
            out.append("bot:" + head.removeprefix("gb:{bot:").removesuffix("}"))
    return out
