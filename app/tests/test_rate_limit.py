"""Telegram's windows hold at the receiver, however late requests reach it after their grant."""

from __future__ import annotations

import dataclasses
import itertools
import threading
import time

import pytest

from grimbots import telegram
from tests.factories import make_bot, make_funnel, make_seller

# The limiter is all Redis: one database backend is enough.
pytestmark = pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)


@pytest.fixture
def bot(db):
    with db.session() as session:
        seller, _ = make_seller(session)
        return make_bot(session, seller, make_funnel(session, seller))


def slowed_client(settings, delays) -> telegram.TelegramClient:
    """A client whose requests leave `next(delays)` seconds after their grant (a busy host, a
    slow network): the delay between the limiter's grant and Telegram's receipt."""
    client = telegram.TelegramClient(settings)
    post = client.session.post

    def slow_post(*args, **kwargs):
        time.sleep(next(delays))
        return post(*args, **kwargs)

    client.session.post = slow_post
    return client


def send_concurrently(bot, clients, chats) -> None:
    """One thread per send (standing for workers in several processes), all started at once."""

    def send(client, chat):
        payload = {"chat_id": chat, "text": "x"}
        client.call(bot.token, "sendMessage", payload, bot_id=bot.id, chat_id=chat)

    threads = [
        threading.Thread(target=send, args=(client, chat))
        for client, chat in zip(itertools.cycle(clients), chats, strict=False)
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)


def most_in_one_second(times: list[float]) -> int:
    times = sorted(times)
    return max(sum(1 for t in times[i:] if t - start < 1.0) for i, start in enumerate(times))


class LateThenEarly:
    """Delays in request order: the first `late` requests take 1.5 s to arrive, the others
    0.5 s, so later grants would overtake earlier ones into one second at the receiver."""

    def __init__(self, late: int):
        self.late = late
        self.count = itertools.count()
        self.lock = threading.Lock()

    def __next__(self) -> float:
        with self.lock:
            n = next(self.count)
        return 1.5 if n < self.late else 0.5


def test_no_second_at_telegram_holds_more_than_the_bots_limit_however_late_requests_arrive(
    bot, fake_tg, settings
):
    limit = 3
    slow = dataclasses.replace(settings, telegram_bot_rate=limit)
    delays = LateThenEarly(limit)
    clients = [slowed_client(slow, delays) for _ in range(3)]
    send_concurrently(bot, clients, [8100 + n for n in range(2 * limit)])
    received = [c["received"] for c in fake_tg.sent(method="sendMessage")]
    assert len(received) == 2 * limit
    assert most_in_one_second(received) <= limit, sorted(r - min(received) for r in received)


def test_no_second_at_telegram_holds_two_sends_to_a_chat_however_late_requests_arrive(
    bot, fake_tg, settings
):
    delays = LateThenEarly(1)
    clients = [slowed_client(settings, delays) for _ in range(2)]
    send_concurrently(bot, clients, [8120, 8120])
    received = sorted(c["received"] for c in fake_tg.sent(chat_id=8120))
    assert len(received) == 2
    assert received[1] - received[0] >= 1.0, received


def test_a_send_with_an_unknown_outcome_holds_its_slot_until_a_bounded_expiry(
    bot, fake_tg, settings
):
    """A read timeout: Telegram may have the message at any moment until the request's bound,
    so the chat's next send waits that bound plus the window, and no longer."""
    quick = dataclasses.replace(settings, telegram_timeout=0.5)
    client = telegram.TelegramClient(quick)
    bound = telegram.INFLIGHT_TIMEOUTS * quick.telegram_timeout
    fake_tg.add_fault(status=None, method="sendMessage", chat_id=8130, delay=1.0)
    payload = {"chat_id": 8130, "text": "x"}
    granted_after = time.time()
    with pytest.raises(telegram.AmbiguousError):
        client.call(bot.token, "sendMessage", payload, bot_id=bot.id, chat_id=8130)
    client.call(bot.token, "sendMessage", payload, bot_id=bot.id, chat_id=8130)
    second = max(c["received"] for c in fake_tg.calls(chat_id=8130))
    assert bound + 1.0 <= second - granted_after < bound + 2.5
