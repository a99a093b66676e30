"""Jobs for the worker-crash tests, importable by `grimbots worker` subprocesses."""

from __future__ import annotations

import time

from rq import get_current_job


def record(tag: str) -> str:
    job = get_current_job()
    job.connection.incr(f"slow_jobs:{tag}:runs")
    return tag


def hang_first_time(tag: str) -> str:
    """Blocks on its first run (so the test can kill the worker mid-job), returns on the next."""
    job = get_current_job()
    runs = job.connection.incr(f"slow_jobs:{tag}:runs")
    if runs == 1:
        time.sleep(120)
    return tag
