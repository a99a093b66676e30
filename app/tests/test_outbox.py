"""The outbox under faults: a claim never outlives a failure that proves nothing was sent, a
send that may have reached Telegram is never repeated, and the shared limits hold across
concurrent senders."""

from __future__ import annotations

import threading
import time
from datetime import timedelta
from types import SimpleNamespace

import pytest
import redis
import requests
from rq.timeouts import JobTimeoutException
from sqlalchemy import select, update
from sqlalchemy.exc import OperationalError

from grimbots import metrics, outbox, telegram
from grimbots.models import OutboundMessage, utcnow
from tests.factories import make_bot, make_funnel, make_seller


@pytest.fixture
def bot(db):
    with db.session() as session:
        seller, _ = make_seller(session)
        return make_bot(session, seller, make_funnel(session, seller))


def row(db, key: str) -> OutboundMessage:
    with db.session() as session:
        return session.scalar(select(OutboundMessage).where(OutboundMessage.idempotency_key == key))


def fail_once(monkeypatch, target, name: str, exc: BaseException) -> None:
    original = getattr(target, name)
    state = {"done": False}

    def wrapper(*args, **kwargs):
        if not state["done"]:
            state["done"] = True
            raise exc
        return original(*args, **kwargs)

    monkeypatch.setattr(target, name, wrapper)


@pytest.mark.parametrize(
    "exc",
    [
        redis.ConnectionError("rate limiter unreachable"),
        JobTimeoutException("job exceeded its timeout"),
        OperationalError("UPDATE", {}, Exception("database went away")),
    ],
    ids=["redis-error", "job-timeout", "database-error"],
)
def test_a_failure_before_the_request_releases_the_claim_so_the_retry_sends(
    bot, fake_tg, db, monkeypatch, exc
):
    fail_once(monkeypatch, telegram.RateLimiter, "acquire", exc)
    with pytest.raises(type(exc)):
        outbox.send(bot, 7001, "k-before", "sendMessage", {"text": "hi"})
    assert row(db, "k-before").claimed_at is None
    assert outbox.send(bot, 7001, "k-before", "sendMessage", {"text": "hi"}) == "sent"
    assert len(fake_tg.sent(chat_id=7001)) == 1


def test_welcomes_of_two_starts_are_no_twins_however_close_they_go_out(bot, fake_tg, db):
    """The outbox reconciler resends a welcome row with its key only: the send lock must tell
    two /starts' welcomes apart from the key itself, while a twin of one /start's welcome
    (another key, the same generation) is still stopped."""
    payload = {"text": "Bem-vindo!"}
    first, second = f"welcome:{bot.id}:1:1796620000000", f"welcome:{bot.id}:1:1796620030000"
    assert outbox.send(bot, 7020, first, "sendMessage", payload) == outbox.SENT
    assert outbox.send(bot, 7020, second, "sendMessage", payload) == outbox.SENT
    twin = f"welcome:{bot.id}:9:1796620030000"
    assert outbox.send(bot, 7020, twin, "sendMessage", payload) == outbox.DUPLICATE
    assert len(fake_tg.sent(chat_id=7020)) == 2


def test_a_redis_error_from_the_send_lock_releases_the_claim(bot, fake_tg, db, monkeypatch):
    fail_once(monkeypatch, outbox.dedup, "send_lock", redis.TimeoutError("send lock timed out"))
    with pytest.raises(redis.TimeoutError):
        outbox.send(bot, 7002, "k-lock", "sendMessage", {"text": "hi"})
    assert outbox.send(bot, 7002, "k-lock", "sendMessage", {"text": "hi"}) == "sent"
    assert len(fake_tg.sent(chat_id=7002)) == 1


def test_a_refused_connection_is_certain_and_the_retry_sends(bot, fake_tg, db):
    client = telegram.get_client()
    real_base = client.base
    client.base = "http://127.0.0.1:9"  # nothing listens: the connection is refused
    try:
        with pytest.raises(telegram.TransientError):
            outbox.send(bot, 7003, "k-refused", "sendMessage", {"text": "hi"})
    finally:
        client.base = real_base
    assert row(db, "k-refused").claimed_at is None
    assert outbox.send(bot, 7003, "k-refused", "sendMessage", {"text": "hi"}) == "sent"
    assert len(fake_tg.sent(chat_id=7003)) == 1


def test_a_job_timeout_during_the_request_is_ambiguous_and_never_resent(
    bot, fake_tg, db, monkeypatch
):
    client = telegram.get_client()
    fail_once(monkeypatch, client.session, "post", JobTimeoutException("killed mid-request"))
    before = metrics.OUTBOX_AMBIGUOUS.labels("interrupted")._value.get()
    with pytest.raises(JobTimeoutException):
        outbox.send(bot, 7004, "k-mid", "sendMessage", {"text": "hi"})
    assert row(db, "k-mid").status == "ambiguous"
    assert metrics.OUTBOX_AMBIGUOUS.labels("interrupted")._value.get() == before + 1
    assert outbox.send(bot, 7004, "k-mid", "sendMessage", {"text": "hi"}) == "ambiguous"


def test_a_reset_after_the_request_went_out_is_ambiguous(bot, fake_tg, db, monkeypatch):
    client = telegram.get_client()
    reset = requests.ConnectionError(ConnectionResetError(104, "Connection reset by peer"))
    fail_once(monkeypatch, client.session, "post", reset)
    assert outbox.send(bot, 7005, "k-reset", "sendMessage", {"text": "hi"}) == "ambiguous"
    assert outbox.send(bot, 7005, "k-reset", "sendMessage", {"text": "hi"}) == "ambiguous"
    assert fake_tg.calls(chat_id=7005) == []


def _dead_claim(db, bot, key: str, chat_id: int, status: str = "pending") -> None:
    with db.session() as session:
        session.add(
            OutboundMessage(
                bot_id=bot.id,
                chat_id=chat_id,
                idempotency_key=key,
                method="sendMessage",
                payload={"chat_id": chat_id, "text": "x"},
                status=status,
                claimed_at=utcnow() - outbox.CLAIM_LEASE - timedelta(seconds=1),
                attempts=1,
            )
        )


def test_a_lapsed_claim_whose_sender_died_before_the_request_is_sent(bot, fake_tg, db):
    _dead_claim(db, bot, "k-dead-early", 7006)
    assert outbox.send(bot, 7006, "k-dead-early", "sendMessage", {"text": "x"}) == "sent"
    assert len(fake_tg.sent(chat_id=7006)) == 1


def test_a_lapsed_claim_whose_sender_died_during_the_request_is_not_resent(bot, fake_tg, db):
    # What the outbox commits right before the request of attempt 1.
    _dead_claim(db, bot, "k-dead-mid", 7007, status=outbox.INFLIGHT)
    assert outbox.send(bot, 7007, "k-dead-mid", "sendMessage", {"text": "x"}) == "ambiguous"
    assert fake_tg.calls(chat_id=7007) == []


def test_the_row_is_in_flight_in_the_database_before_the_request(bot, fake_tg, db, monkeypatch):
    client = telegram.get_client()
    original, seen = client.session.post, []

    def post(*args, **kwargs):
        seen.append(row(db, "k-mark").status)
        return original(*args, **kwargs)

    monkeypatch.setattr(client.session, "post", post)
    assert outbox.send(bot, 7008, "k-mark", "sendMessage", {"text": "x"}) == "sent"
    assert seen == [outbox.INFLIGHT]
    assert row(db, "k-mark").status == "sent"


def test_an_ambiguous_send_whose_result_was_lost_is_not_resent_after_a_failover(
    bot, fake_tg, db, monkeypatch, redis_client
):
    """The request reached Telegram, then the database went away before the outcome was
    written, and Redis (a Cluster failover) forgot whatever it held: the row says in flight."""
    client = telegram.get_client()
    original = client.session.post

    def post(*args, **kwargs):
        original(*args, **kwargs)  # delivered
        raise JobTimeoutException("killed before the answer was recorded")

    monkeypatch.setattr(client.session, "post", post)
    monkeypatch.setattr(outbox, "_finish", lambda *a, **k: (_ for _ in ()).throw(OSError()))
    with pytest.raises(JobTimeoutException):
        outbox.send(bot, 7013, "k-lost", "sendMessage", {"text": "x"})
    monkeypatch.undo()
    redis_client.flushdb()
    with db.session() as session:  # an hour later: the claim lapsed long ago
        session.execute(
            update(OutboundMessage)
            .where(OutboundMessage.idempotency_key == "k-lost")
            .values(claimed_at=utcnow() - timedelta(hours=1))
        )
    assert outbox.send(bot, 7013, "k-lost", "sendMessage", {"text": "x"}) == "ambiguous"
    assert len(fake_tg.sent(chat_id=7013)) == 1


def test_two_live_runs_of_one_job_send_once(bot, fake_tg, db, monkeypatch):
    """The first run stalls in the limiter (its queue Redis away for over 10 s), the reaper
    runs the job again, and the rerun takes the claim over: only one of them may send."""
    monkeypatch.setattr(outbox, "get_current_job", lambda: SimpleNamespace(id="job-twice"))
    original = telegram.RateLimiter.acquire
    stalled, resume = threading.Event(), threading.Event()

    def acquire(self, *args, **kwargs):
        if threading.current_thread().name == "first-run":
            stalled.set()
            resume.wait(10)
        return original(self, *args, **kwargs)

    monkeypatch.setattr(telegram.RateLimiter, "acquire", acquire)
    outcome: dict = {}

    def first() -> None:
        try:
            outcome["first"] = outbox.send(bot, 7014, "k-twice", "sendMessage", {"text": "x"})
        except outbox.ClaimBusy as exc:
            outcome["first"] = exc

    thread = threading.Thread(target=first, name="first-run")
    thread.start()
    assert stalled.wait(10)
    # The rerun's claim sees its own job id (an earlier run, believed dead) and takes over.
    with db.session() as session:
        session.execute(
            update(OutboundMessage)
            .where(OutboundMessage.idempotency_key == "k-twice")
            .values(claimed_at=utcnow() - outbox.CLAIM_LEASE - timedelta(seconds=1))
        )
    assert outbox.send(bot, 7014, "k-twice", "sendMessage", {"text": "x"}) == "sent"
    resume.set()
    thread.join(20)
    assert isinstance(outcome["first"], outbox.ClaimLost)
    assert len(fake_tg.sent(chat_id=7014)) == 1
    assert row(db, "k-twice").status == "sent"


def test_a_long_retry_after_holds_every_sender_for_all_of_it(bot, fake_tg, db, redis_client):
    fake_tg.add_fault(status=429, method="sendMessage", retry_after=120)
    with pytest.raises(telegram.TransientError):
        outbox.send(bot, 7009, "k-flood", "sendMessage", {"text": "x"})
    hold_ms = redis_client.pttl(telegram.RateLimiter.hold_key(bot.id))
    assert hold_ms > 110_000  # not capped at 60 s
    assert row(db, "k-flood").claimed_at is None  # a 429 is certain: the retry may send
    other = telegram.TelegramClient(telegram.get_client().settings)
    with pytest.raises(telegram.TransientError):
        other.call(bot.token, "sendMessage", {"chat_id": 7010, "text": "y"}, bot_id=bot.id)
    assert fake_tg.sent(chat_id=7010) == []
    # Leave no 2-minute hold behind for whatever runs next on this Redis database.
    redis_client.delete(telegram.RateLimiter.hold_key(bot.id))


def _max_in_window(times: list[float], window: float) -> int:
    times = sorted(times)
    best, start = 0, 0
    for end, t in enumerate(times):
        while t - times[start] >= window:
            start += 1
        best = max(best, end - start + 1)
    return best


def test_concurrent_senders_never_exceed_30_per_second_per_bot(bot, fake_tg, settings):
    """Six threads, each its own client (as six processes would be), 120 sends in all."""

    def sender(n: int) -> None:
        client = telegram.TelegramClient(settings)
        for i in range(20):
            chat = 20_000 + n * 100 + i
            client.call(
                bot.token,
                "sendMessage",
                {"chat_id": chat, "text": "x"},
                bot_id=bot.id,
                chat_id=chat,
            )

    threads = [threading.Thread(target=sender, args=(n,)) for n in range(6)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=30)
    times = [c["received"] for c in fake_tg.sent(token=bot.token)]
    assert len(times) == 120
    # Stamped at receipt, as Telegram counts; the old GCRA let about twice the rate through.
    assert _max_in_window(times, 1.0) <= 30


def test_concurrent_senders_never_exceed_one_per_second_per_chat(bot, fake_tg, settings):
    def sender() -> None:
        client = telegram.TelegramClient(settings)
        for _ in range(2):
            client.call(
                bot.token,
                "sendMessage",
                {"chat_id": 7011, "text": "x"},
                bot_id=bot.id,
                chat_id=7011,
            )

    threads = [threading.Thread(target=sender) for _ in range(3)]
    started = time.monotonic()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=30)
    times = [c["time"] for c in fake_tg.sent(chat_id=7011)]
    assert len(times) == 6 and time.monotonic() - started < 30
    assert _max_in_window(times, 1.0) == 1


def test_a_telegram_timeout_longer_than_the_claim_lease_allows_is_refused():
    from grimbots.settings import Settings, SettingsError

    with pytest.raises(SettingsError, match="GRIMBOTS_TELEGRAM_TIMEOUT"):
        Settings.from_env({"GRIMBOTS_TELEGRAM_TIMEOUT": "60"})


def test_an_answer_proving_non_delivery_puts_the_row_back_to_pending(bot, fake_tg, db):
    """A worker that dies waiting out a 429 has sent nothing: its takeover must not be called
    ambiguous (faults, seed 4242 #23: a welcome lost that way)."""
    fake_tg.add_fault(status=429, method="sendMessage", retry_after=120)
    with pytest.raises(telegram.TransientError):
        outbox.send(bot, 7012, "k-429-mark", "sendMessage", {"text": "x"})
    assert row(db, "k-429-mark").status == "pending"
    assert row(db, "k-429-mark").claimed_at is None


class _ExpiringLocks:
    """The state Redis, where every lock a SET NX finds held expires right after that refusal
    (a job stalled between two commands on a loaded machine, or a lock reaching its TTL)."""

    def __init__(self, client):
        self._client = client

    def set(self, name, value, *args, nx=False, **kwargs):
        taken = self._client.set(name, value, *args, nx=nx, **kwargs)
        if nx and not taken:
            self._client.delete(name)
        return taken

    def __getattr__(self, name):
        return getattr(self._client, name)


def test_a_retried_welcome_is_sent_when_its_own_send_lock_expires_during_the_check(
    bot, fake_tg, db, monkeypatch
):
    """A /start's welcome retried under 429 holds meets its own send lock, taken by its first
    attempt; that lock lapsing between "taken?" and "by whom?" must not make the welcome a
    twin of itself (seed 20261207 #53: the second /start's welcome ended "suppressed")."""
    key, payload = f"welcome:{bot.id}:85:1796659091530", {"text": "Bem-vindo!"}
    fail_once(monkeypatch, telegram.RateLimiter, "acquire", redis.ConnectionError("held"))
    with pytest.raises(redis.ConnectionError):
        outbox.send(bot, 7030, key, "sendMessage", payload)
    expiring = _ExpiringLocks(outbox.dedup.state())
    monkeypatch.setattr(outbox.dedup, "state", lambda: expiring)
    assert outbox.send(bot, 7030, key, "sendMessage", payload) == outbox.SENT
    assert row(db, key).status == "sent"
    assert len(fake_tg.sent(chat_id=7030)) == 1


def test_a_retried_start_is_not_throttled_when_its_own_lock_expires_during_the_check(
    bot, monkeypatch
):
    """Layer 4 likewise: a retried /start job passes its own last-start lock, even one that
    lapses between the commands that check it; another /start is still throttled."""
    assert outbox.dedup.last_start_throttle(bot.id, 7031, 501)
    expiring = _ExpiringLocks(outbox.dedup.state())
    monkeypatch.setattr(outbox.dedup, "state", lambda: expiring)
    assert outbox.dedup.last_start_throttle(bot.id, 7031, 501)
    monkeypatch.undo()
    assert not outbox.dedup.last_start_throttle(bot.id, 7031, 502)
