"""Telegram client and outbox: retries, 429, 403, limits across processes, never twice."""

from __future__ import annotations

import dataclasses
import time

import pytest
from sqlalchemy import select

from grimbots import jobs, outbox, telegram
from grimbots.models import InboundUpdate, OutboundMessage
from tests.factories import make_bot, make_funnel, make_seller, start_update


@pytest.fixture
def bot(db):
    with db.session() as session:
        seller, _ = make_seller(session)
        return make_bot(session, seller, make_funnel(session, seller))


def test_429_retry_after_is_honoured_then_the_message_goes_once(bot, fake_tg):
    fake_tg.add_fault(status=429, method="sendMessage", retry_after=1)
    assert outbox.send(bot, 8001, "k-429", "sendMessage", {"text": "hi"}) == "sent"
    calls = fake_tg.calls(method="sendMessage", chat_id=8001)
    assert [c["status"] for c in calls] == [429, 200]
    assert calls[1]["time"] - calls[0]["time"] >= 0.95


def test_server_errors_are_retried_with_backoff(bot, fake_tg):
    fake_tg.add_fault(status=502, method="sendMessage", count=2)
    assert outbox.send(bot, 8002, "k-5xx", "sendMessage", {"text": "hi"}) == "sent"
    assert [c["status"] for c in fake_tg.calls(chat_id=8002)] == [502, 502, 200]


def test_a_timeout_after_the_request_went_out_is_not_sent_again(bot, fake_tg, db):
    """Telegram accepted it but answered late: the send is ambiguous, never repeated."""
    fake_tg.add_fault(status=None, method="sendMessage", delay=3.0)  # client timeout is 2 s
    assert outbox.send(bot, 8003, "k-timeout", "sendMessage", {"text": "hi"}) == "ambiguous"
    assert outbox.send(bot, 8003, "k-timeout", "sendMessage", {"text": "hi"}) == "ambiguous"
    time.sleep(1.3)  # let the slow answer land at the fake
    assert len(fake_tg.calls(chat_id=8003)) == 1
    with db.session() as session:
        row = session.scalar(
            select(OutboundMessage).where(OutboundMessage.idempotency_key == "k-timeout")
        )
        assert row.status == "ambiguous"


def test_bad_request_is_not_retried_and_is_recorded_failed(bot, fake_tg, db):
    fake_tg.add_fault(status=400, method="sendMessage")
    assert outbox.send(bot, 8004, "k-400", "sendMessage", {"text": "hi"}) == "failed"
    assert len(fake_tg.calls(chat_id=8004)) == 1
    with db.session() as session:
        row = session.scalar(
            select(OutboundMessage).where(OutboundMessage.idempotency_key == "k-400")
        )
        assert row.status == "failed"


def test_same_idempotency_key_is_never_sent_twice(bot, fake_tg):
    assert outbox.send(bot, 8005, "k-once", "sendMessage", {"text": "a"}) == "sent"
    assert outbox.send(bot, 8005, "k-once", "sendMessage", {"text": "a"}) == "duplicate"
    assert len(fake_tg.sent(chat_id=8005)) == 1


def test_transient_failure_releases_the_claim_so_the_retried_job_sends_once(bot, fake_tg, db):
    fake_tg.add_fault(status=500, method="sendMessage", count=10)
    with pytest.raises(telegram.TransientError):
        outbox.send(bot, 8006, "k-retry", "sendMessage", {"text": "later"})
    fake_tg.clear_faults()
    assert outbox.send(bot, 8006, "k-retry", "sendMessage", {"text": "later"}) == "sent"
    assert outbox.send(bot, 8006, "k-retry", "sendMessage", {"text": "later"}) == "duplicate"
    assert len(fake_tg.sent(chat_id=8006)) == 1


def test_a_live_claim_is_not_stolen_by_a_concurrent_sender(bot, fake_tg, db):
    from grimbots.models import utcnow

    with db.session() as session:
        session.add(
            OutboundMessage(
                bot_id=bot.id,
                chat_id=8007,
                idempotency_key="k-claimed",
                method="sendMessage",
                payload={},
                status="pending",
                claimed_at=utcnow(),
                attempts=1,
            )
        )
    # Not "duplicate": that would let the job succeed without the message ever being sent.
    with pytest.raises(outbox.ClaimBusy):
        outbox.send(bot, 8007, "k-claimed", "sendMessage", {"text": "x"})
    assert fake_tg.calls(chat_id=8007) == []


def test_twin_send_with_another_key_is_stopped_by_the_send_lock(bot, fake_tg):
    assert outbox.send(bot, 8008, "path-a", "sendMessage", {"text": "same"}) == "sent"
    assert outbox.send(bot, 8008, "path-b", "sendMessage", {"text": "same"}) == "duplicate"
    media = {"photo": "https://example.com/p.jpg", "caption": "c"}
    assert outbox.send(bot, 8008, "media-a", "sendPhoto", media) == "sent"
    assert outbox.send(bot, 8008, "media-b", "sendPhoto", media) == "duplicate"
    assert len(fake_tg.sent(chat_id=8008)) == 2


def test_one_message_per_second_per_chat(bot, fake_tg):
    for n in range(3):
        outbox.send(bot, 8009, f"rate-{n}", "sendMessage", {"text": f"m{n}"})
    times = [c["time"] for c in fake_tg.sent(chat_id=8009)]
    gaps = [b - a for a, b in zip(times, times[1:], strict=False)]
    assert len(times) == 3 and all(gap >= 0.9 for gap in gaps), gaps


def test_per_bot_rate_is_shared_by_every_client(bot, fake_tg, settings):
    """Two clients (standing for two processes) share one schedule through Redis."""
    other = telegram.TelegramClient(settings)
    mine = telegram.get_client()
    for n in range(45):
        client = mine if n % 2 else other
        client.call(
            bot.token,
            "sendMessage",
            {"chat_id": 9000 + n, "text": "x"},
            bot_id=bot.id,
            chat_id=9000 + n,
        )
    times = sorted(c["time"] for c in fake_tg.sent(method="sendMessage"))
    # A burst of 30 is allowed, then 30/s: 45 sends need at least ~0.5 s.
    assert times[-1] - times[0] >= 0.45


def test_429_holds_back_every_sender_of_that_bot(bot, fake_tg, settings):
    limiter = telegram.RateLimiter(30, 1)
    penalized = time.time()
    limiter.penalize(bot.id, 1.0)
    telegram.get_client().call(
        bot.token, "sendMessage", {"chat_id": 8010, "text": "x"}, bot_id=bot.id, chat_id=8010
    )
    call = fake_tg.sent(chat_id=8010)[0]
    assert call["time"] - penalized >= 0.95


def test_worker_processing_an_update_twice_replies_once(bot, fake_tg, db, redis_client):
    """Layer 7: with the Redis locks gone (expired), the database still stops the twin."""
    update = start_update(8011)
    assert jobs.process_update(bot.id, update) == "start"
    redis_client.flushdb()
    assert jobs.process_update(bot.id, update) == "duplicate"
    assert len(fake_tg.sent(method="sendPhoto", chat_id=8011)) == 1
    with db.session() as session:
        assert session.query(InboundUpdate).filter_by(bot_id=bot.id).count() == 1


def test_half_processed_update_resumes_without_a_second_reply(bot, fake_tg, db, redis_client):
    update = start_update(8012)
    jobs.process_update(bot.id, update)
    with db.session() as session:  # as if the worker died after sending, before marking done
        row = session.scalar(select(InboundUpdate).where(InboundUpdate.bot_id == bot.id))
        row.processed_at = None
    redis_client.flushdb()
    assert jobs.process_update(bot.id, update) == "start"
    assert len(fake_tg.sent(method="sendPhoto", chat_id=8012)) == 1


def test_two_starts_within_seconds_reach_the_funnel_once(bot, fake_tg):
    """Layer 4: a second /start of the chat inside 5 s (other update, other payload)."""
    assert jobs.process_update(bot.id, start_update(8013, "a" * 32)) == "start"
    assert jobs.process_update(bot.id, start_update(8013, "b" * 32)) == "throttled"
    assert len(fake_tg.sent(method="sendPhoto", chat_id=8013)) == 1


def test_set_webhooks_registers_url_and_secret(bot, fake_tg, settings):
    results = telegram.set_webhooks(settings)
    assert results == [{"bot_id": bot.id, "username": bot.username, "ok": True}]
    hook = fake_tg.webhook(bot.token)
    assert hook["url"].endswith(f"/webhook/telegram/{bot.id}")
    assert hook["secret_token"] == bot.webhook_secret


def test_webhooks_are_due_until_set_at_the_public_url(bot, fake_tg, settings):
    assert [d["bot_id"] for d in telegram.webhooks_due(settings)] == [bot.id]
    telegram.set_webhooks(settings)
    assert telegram.webhooks_due(settings) == []
    moved = dataclasses.replace(settings, public_url="https://lb.example.net")  # phase 3
    assert [d["bot_id"] for d in telegram.webhooks_due(moved, bot.id)] == [bot.id]
