"""Real `grimbots worker` processes for a scenario run: several draining at once, or one
SIGKILLed mid-job (a mixin of `driver.ScenarioRun`)."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time


class WorkerProcesses:
    """Worker processes with the lane's settings."""

    def _worker_process(self, burst: bool) -> subprocess.Popen:
        """A real `grimbots worker` process on every queue, with the lane's settings."""
        env = dict(os.environ) | self.lane.settings_env(
            self.s.backend, self.fake.base_url, self.s.lagging_reads
        )
        env.pop("PROMETHEUS_MULTIPROC_DIR", None)
        args = [sys.executable, "-c", "from grimbots.cli import main; main()", "worker",
                "webhook", "tasks", "gateway"] + (["--burst"] if burst else [])  # fmt: skip
        # Its own process group: RQ's scheduler is a forked child that must die with it.
        return subprocess.Popen(
            args,
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            start_new_session=True,
        )

    @staticmethod
    def _kill_group(proc: subprocess.Popen) -> None:
        """What systemd does once a unit's main process is gone: kill what is left of it."""
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(proc.pid, signal.SIGKILL)
        # Gone for good (an orphan still holding the dead worker's BLPOP socket would take the
        # next job pushed and lose it), then a moment for Redis to see its sockets close.
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline:
            try:
                os.killpg(proc.pid, 0)
            except (ProcessLookupError, PermissionError):
                break
            time.sleep(0.02)
        time.sleep(0.1)

    def _parallel_workers(self, n: int) -> None:
        """Several worker processes drain the queues at once (burst mode), as in production."""
        procs = [self._worker_process(burst=True) for _ in range(n)]
        deadline = time.monotonic() + 90
        for proc in procs:
            try:
                proc.wait(timeout=max(1.0, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(timeout=10)
                self.notes.append("a burst worker was still busy after 90 s")
            self._kill_group(proc)
        self._drain()

    def _kill_worker_mid_job(self, params: dict) -> None:
        """A real worker process takes the queued jobs; it is SIGKILLed while one is running."""
        self.fake.add_fault(status=None, delay=params["slow"], count=2, token=self.fault_token)
        proc = self._worker_process(burst=False)
        try:
            time.sleep(params["kill_after"])
        finally:
            proc.send_signal(signal.SIGKILL)  # the main process only, like kill -9 <pid>
            proc.wait(timeout=10)
            self._kill_group(proc)
        self.fired["worker_kill"] += 1
