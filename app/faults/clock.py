"""Scenario time (a mixin of `driver.ScenarioRun`): "time passes" without waiting, with what
production does meanwhile: live workers reap a killed worker's jobs, scheduled jobs come due,
and every RECONCILE_EVERY seconds the reconcilers run once, enqueued the way the workers'
liveness threads enqueue them (`reconcile.schedule_due`) and run by a worker. Without them a
scenario's invariants were checked against a world where nothing finishes a half-done send
before the final recovery."""

from __future__ import annotations

import time

from faults import outages
from faults.recovery import move_scheduled
from grimbots import reconcile, webhook
from grimbots.redis_pool import queue_connection

# Production's period: each reconciler once per INTERVAL across all workers.
RECONCILE_EVERY = reconcile.INTERVAL
HOLD_END_MS = 10**9  # past any retry_after


class ScenarioTime:
    """Lets scenario time pass; `scenario_seconds` is the scenario's clock."""

    scenario_seconds = 0
    reconciler_passes = 0

    def _later(self, seconds: int, everything: bool = False) -> None:
        """Time passes: the work queued now runs under this step's faults; then, with the faults
        over, the time passes in steps that end on each minute of the scenario's clock, and at
        each minute the reconcilers run once. With `everything`, every scheduled job runs
        (recovery: time goes on)."""
        self._drain()
        self._disarm()
        started = time.time()
        passed = 0
        while passed < seconds:
            to_minute = RECONCILE_EVERY - self.scenario_seconds % RECONCILE_EVERY
            step = min(seconds - passed, to_minute)
            passed += step
            self._pass_time(step, started + passed, everything)
            self.scenario_seconds += step
            if self.scenario_seconds % RECONCILE_EVERY == 0:
                self._run_reconcilers()

    def _pass_time(self, seconds: int, window_end: float, everything: bool) -> None:
        """`seconds` pass: a killed worker's jobs run again (live workers' liveness threads reap
        them), the jobs due by `window_end` (RQ retries, downsells) run, in as many rounds as
        they need; then short-lived Redis keys and the database's timestamps age by `seconds`."""
        self._liveness_meanwhile(seconds)
        for _ in range(3):  # a worker that died is restarted, like systemd does
            if not self._queued():
                break
            self._drain()
        for _ in range(12):
            try:
                moved = move_scheduled(None if everything else window_end)
            except Exception as exc:
                self.notes.append(f"scheduler died: {type(exc).__name__}")
                break
            if not moved:
                break
            self._drain()
        ms = seconds * 1000
        for key in self.r.scan_iter(count=1000):
            if key.startswith("rq:") or ":rl:" in key:
                continue  # RQ's registries and the rate limiter run on real time
            ttl = self.r.pttl(key)
            if ttl > 0:
                if ttl <= ms:
                    self.r.delete(key)
                else:
                    self.r.pexpire(key, ttl - ms)
        # Recovery lets all the time pass that the remaining work needs: holds run out.
        self.hold_ends += outages.age_rate_holds(self.r, HOLD_END_MS if everything else ms)
        self.lane.shift_time(self.s.backend, seconds)
        webhook.forget_local_bot_meta()

    def _run_reconcilers(self) -> None:
        """A minute passed: what the workers' liveness threads do then (enqueue each reconciler
        whose `gb:reconcile:<name>:due` mark ran out), and a worker runs them."""
        try:
            reconcile.schedule_due(queue_connection())
        except Exception as exc:
            self.notes.append(f"reconciler scheduling failed: {type(exc).__name__}: {exc}")
            return
        self.reconciler_passes += 1
        self._drain()
