"""GRIMBOTS_JOB_TIMEOUT (the inventory's grimbots_job_timeout) is the RQ timeout of every job."""

from __future__ import annotations

from datetime import timedelta

from conftest import make_settings
from rq.job import Job

from grimbots import intake, queues, redis_pool


def _with_job_timeout(database_url: str, seconds: int):
    redis_pool.reset_pools()
    return redis_pool.get_pools(make_settings(database_url, GRIMBOTS_JOB_TIMEOUT=str(seconds)))


def test_jobs_of_every_producer_get_the_configured_timeout(settings, database_url):
    _with_job_timeout(database_url, 77)
    conn = redis_pool.queue_connection()
    now = queues.enqueue("tasks", "grimbots.jobs.process_update", 1, {"update_id": 1})
    later = queues.enqueue_in(
        "tasks", timedelta(minutes=5), "grimbots.jobs.process_update", 1, {"update_id": 2}
    )
    assert queues.enqueue_unique("tasks", "unique-1", "grimbots.jobs.process_update", 1, {})
    unique = Job.fetch("unique-1", connection=conn)
    intake_fields = intake.job_fields(1, {"update_id": 3})[1]
    assert [now.timeout, later.timeout, unique.timeout, intake_fields["timeout"]] == [77] * 4


def test_an_explicit_timeout_still_wins(settings, database_url):
    _with_job_timeout(database_url, 77)
    job = queues.enqueue("tasks", "grimbots.jobs.process_update", 1, {}, job_timeout=5)
    assert job.timeout == 5
