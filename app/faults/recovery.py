"""Recovery after a scenario's faults, until quiet, and what a failing run reports about RQ
(a mixin of `driver.ScenarioRun`)."""

from __future__ import annotations

import os
import time

from rq import Queue, SimpleWorker
from rq.job import Job

from faults import outages
from faults.scenario import LONG_RETRY_AFTER
from grimbots import liveness
from grimbots.queues import QUEUE_NAMES, WEBHOOK
from grimbots.redis_pool import queue_connection
from grimbots.worker import EXCEPTION_HANDLERS, enqueue_due_scheduled

# Real seconds of patience (a dead worker's job needs them; a loaded machine needs more).
RECOVERY_WAIT = float(os.environ.get("FAULT_RECOVERY_WAIT", "120"))
# Never wait on more than this many redeliveries of one update (Telegram gives up too).
MAX_REDELIVERIES = 12
# Each recovery round lets this much time pass (seconds) for Redis keys and the database.
RECOVERY_STEP = 120
MIN_RECOVERY_ROUNDS = 2


class Recovery:
    """Faults cleared; redeliveries, retries, maintenance and reconcilers (on the clock)."""

    # -- recovery ---------------------------------------------------------------------------------
    def recover(self) -> float:
        """Faults cleared; redeliveries, retries, maintenance and reconcilers until quiet."""
        started = time.monotonic()
        deadline = started + RECOVERY_WAIT
        try:
            self._recover(deadline)
            self.settle()
        finally:
            self.op_seconds["recovery"] += time.monotonic() - started
        return time.monotonic() - started

    def settle(self, limit: float = 10.0) -> None:
        """Wait until the fake has recorded every call a delay fault was holding back."""
        deadline = time.monotonic() + limit
        while self.fake.held() and time.monotonic() < deadline:
            time.sleep(0.05)

    def _recover(self, deadline: float) -> None:
        self._disarm()
        self.fake.clear_faults()
        self.reactivate = [b for b in self.reactivate if not outages.set_active(self, True, b)]
        for lead in list(self.blocked):
            self.blocked.discard(lead)
            self._block_chat(lead)
        rounds = 0
        while True:
            rounds += 1
            if self.standby is not None:
                self.standby.catch_up()
            self._redeliver_refused(max_per_item=1)
            for lead in sorted(self.pay_wanted):
                self._pay(lead)
            self._later(RECOVERY_STEP, everything=True)
            self._maintenance()
            self._drain(include_scheduled=False)
            # A few passes at least: a reconciler acts on rows older than its grace time.
            if rounds >= MIN_RECOVERY_ROUNDS and self._quiet():
                break
            if time.monotonic() > deadline or rounds > 60:
                self.notes.append(f"recovery did not get quiet in {RECOVERY_WAIT:.0f} s")
                break
            if self._stuck_jobs() or self._lost_updates():
                time.sleep(2.0)  # a dead worker's job: real time must pass for it to be freed

    def _liveness_meanwhile(self, seconds: int) -> None:
        """What every live worker's liveness thread does while `seconds` pass: a killed worker's
        alive key runs out, and its started jobs go back to RQ (a retry runs at once), about
        15-25 s after the kill. Without it a killed job waited for recovery, however much
        scenario time passed, and a lead paid a charge whose PIX code was never sent."""
        if seconds < liveness.ALIVE_TTL + liveness.REAP_EVERY:
            return
        for key in self.r.scan_iter(match=liveness.alive_key("*"), count=1000):
            if 0 < self.r.pttl(key) <= seconds * 1000:
                self.r.delete(key)
        try:
            liveness.reap_orphans(self.rq, QUEUE_NAMES, EXCEPTION_HANDLERS)
        except Exception as exc:
            self.notes.append(f"liveness reaper failed: {type(exc).__name__}: {exc}")

    def _maintenance(self) -> None:
        """What live workers do on their own besides the reconcilers (those run on the
        scenario's clock, `clock.ScenarioTime`): RQ's registry maintenance."""
        conn = queue_connection()
        try:
            worker = SimpleWorker([Queue(n, connection=conn) for n in QUEUE_NAMES], connection=conn)
            worker.clean_registries()
        except Exception as exc:
            self.notes.append(f"maintenance failed: {type(exc).__name__}: {exc}")

    def _queued(self) -> int:
        conn = self.rq
        try:
            return sum(Queue(n, connection=conn).count for n in QUEUE_NAMES)
        except Exception:
            return 1

    def _stuck_jobs(self) -> int:
        conn = self.rq
        return sum(Queue(n, connection=conn).started_job_registry.count for n in QUEUE_NAMES)

    def _lost_updates(self) -> int:
        """Accepted updates whose job a killed worker popped into nowhere: still `queued`, yet
        neither in the webhook queue nor started. The intake reconciler puts them back once they
        are a minute old in real time (RQ's job hashes do not age with scenario time), so
        recovery waits for that instead of ending with the update never processed."""
        conn = self.rq
        queue = Queue(WEBHOOK, connection=conn)
        present = set(conn.lrange(queue.key, 0, -1))
        started = conn.zrange(queue.started_job_registry.key, 0, -1)
        present |= {entry.split(b":", 1)[0] for entry in started}
        lost = 0
        for key in conn.scan_iter(match=Job.redis_job_namespace_prefix + "tg-*", count=1000):
            job_id = key.removeprefix(Job.redis_job_namespace_prefix.encode())
            if b":" in job_id or job_id in present:
                continue  # a job's side key, or a job RQ still holds
            lost += conn.hget(key, "status") == b"queued"
        return lost

    def _quiet(self) -> bool:
        if self._refused_updates() or self._lost_updates():
            return False
        if any(not p["ok"] and len(p["answers"]) <= MAX_REDELIVERIES
               for p in self.payment_posts.values()):  # fmt: skip
            return False
        if any(not c["done"] and len(c["answers"]) <= MAX_REDELIVERIES for c in self.campaigns):
            return False
        conn = self.rq
        for name in QUEUE_NAMES:
            q = Queue(name, connection=conn)
            if q.count or q.scheduled_job_registry.count or q.started_job_registry.count:
                return False
        for lead in self.pay_wanted:
            # The customer still has a charge to pay, its PIX code in hand.
            if self.chats[lead] not in self.paid_at and self._payable(lead) is not None:
                return False
        return True

    # -- what happened -----------------------------------------------------------------------------
    def job_notes(self) -> list[str]:
        """Jobs RQ still holds (failed, started, scheduled), for a failing scenario's report."""
        out = []
        conn = self.rq
        for name in QUEUE_NAMES:
            q = Queue(name, connection=conn)
            for label, registry in (
                ("failed", q.failed_job_registry),
                ("started", q.started_job_registry),
                ("scheduled", q.scheduled_job_registry),
            ):
                for job_id in registry.get_job_ids()[:10]:
                    job = q.fetch_job(job_id)
                    exc = ""
                    if job is not None and label == "failed":
                        info = job.latest_result()
                        exc = (info.exc_string or "").strip().splitlines()[-1:] if info else []
                        exc = exc[0][:100] if exc else ""
                    out.append(f"job {name}/{label}: {job_id} {exc}")
        return out

    def count_telegram_faults(self, calls: list[dict]) -> None:
        """Telegram faults that fired, by kind, from the fake's own record."""
        for c in calls:
            if c["status"] == 429 and c.get("fault"):
                long = f"retry after {LONG_RETRY_AFTER}" in str(c.get("description"))
                self.fired["telegram_429_long" if long else "telegram_429"] += 1
            elif c["status"] >= 500 and c.get("fault"):
                kind = "telegram_timeout_before" if c.get("delay") else "telegram_5xx"
                self.fired[kind] += 1
            elif c["status"] == 200 and c.get("delay"):
                self.fired["telegram_timeout_after"] += 1


def move_scheduled(until: float | None) -> int:
    """What RQ's scheduler does when jobs come due: move those due by `until` (epoch seconds;
    None: all of them) to their queues."""
    return enqueue_due_scheduled(include_future=until is None, until=until)
