"""Dependency outages longer than RQ's retry budget: the job waits them out, never parked.

Each test keeps a dependency away for far more tries than DEFAULT_RETRY allows (drain_queues
runs a scheduled retry at once: one round is one try), then brings it back and checks what
reached the fake Telegram."""

from __future__ import annotations

import pytest
import redis
from rq.registry import FailedJobRegistry
from sqlalchemy.exc import OperationalError

from grimbots import db as db_module
from grimbots import jobs, metrics, queues, retry, telegram
from grimbots.redis_pool import queue_connection
from tests.factories import make_bot, make_funnel, make_seller, start_update

# More tries than the first run and DEFAULT_RETRY's 5 retries together.
TRIES = queues.DEFAULT_RETRY.max + 3


@pytest.fixture
def bot(db):
    with db.session() as session:
        seller, _ = make_seller(session)
        return make_bot(session, seller, make_funnel(session, seller))


def database_down(monkeypatch) -> dict:
    """Every session of the primary fails as PostgreSQL down does, while state["down"]."""
    state = {"down": True}
    original = db_module.Database.session

    def session(self):
        if state["down"]:
            raise OperationalError("SELECT 1", {}, Exception("connection refused"))
        return original(self)

    monkeypatch.setattr(db_module.Database, "session", session)
    return state


def telegram_held(bot) -> dict:
    """A 429 whose retry_after (an hour) outlasts every retry of the job."""
    telegram.RateLimiter(30, 1).penalize(bot.id, 3600)
    return {"down": True}


def retries(reason: str) -> float:
    return metrics.JOB_RETRIES.labels(reason)._value.get()


@pytest.mark.parametrize("outage", ["database", "telegram"])
def test_a_start_accepted_during_an_outage_longer_than_the_retry_budget_is_answered_once(
    bot, fake_tg, drain, monkeypatch, redis_client, outage
):
    job = queues.enqueue(queues.WEBHOOK, jobs.process_update, bot.id, start_update(6101))
    before = retries(outage)
    down = database_down(monkeypatch) if outage == "database" else telegram_held(bot)
    drain(include_scheduled=True, rounds=TRIES)
    assert FailedJobRegistry(queues.WEBHOOK, connection=queue_connection()).count == 0
    assert queues.in_flight(job.id)
    assert retries(outage) - before >= TRIES
    job.refresh()
    assert job.retry_intervals[0] <= retry.CAP
    down["down"] = False
    redis_client.delete(telegram.RateLimiter.hold_key(bot.id))
    drain(include_scheduled=True)
    assert len(fake_tg.sent(chat_id=6101)) == 1
    assert not queues.in_flight(job.id)


def test_a_job_failing_for_a_bug_ends_in_the_failed_registry_and_is_counted(bot, drain):
    counter = metrics.JOB_FAILURES.labels(queues.WEBHOOK, "process_update")
    before = counter._value.get()
    queues.enqueue(queues.WEBHOOK, jobs.process_update, bot.id, {"message": {}})  # no update_id
    drain(include_scheduled=True)
    assert FailedJobRegistry(queues.WEBHOOK, connection=queue_connection()).count == 1
    assert counter._value.get() == before + 1


def test_the_backoff_between_outage_retries_doubles_up_to_a_cap():
    delays = [retry.backoff(n) for n in range(12)]
    assert delays[:3] == [2, 4, 8]
    assert max(delays) == retry.CAP
    assert retry.backoff(0, retry_after=45) == 45
    assert retry.backoff(0, retry_after=86400) == retry.CAP


def test_a_busy_claim_is_tried_again_within_the_cap_however_often_it_was_busy():
    """A dead sender's claim lapses after its 60 s lease: the rerun must not wait a doubling
    backoff past it (64 s, then 128 s), or its welcome comes minutes late."""
    from types import SimpleNamespace

    from grimbots.outbox import ClaimBusy

    job = SimpleNamespace(meta={retry.META_OUTAGES: 7}, retry_intervals=[10], retries_left=5)
    assert retry.on_failure(job, ClaimBusy, ClaimBusy("welcome:1"), None) is True
    assert job.retry_intervals == [int(retry.CLAIM_BUSY_CAP)]
    job.meta[retry.META_OUTAGES] = 7
    assert retry.on_failure(job, ConnectionError, redis.ConnectionError("down"), None) is True
    assert job.retry_intervals == [retry.backoff(7)] and retry.backoff(7) > retry.CLAIM_BUSY_CAP
