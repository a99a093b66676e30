"""Telegram restarts update_id at random after a week without updates: a lower id must still
reset the funnel, and an id seen long ago must not make a new update a duplicate."""

from __future__ import annotations

from datetime import timedelta

import pytest
from sqlalchemy import select

from grimbots import jobs, reconcile
from grimbots.models import InboundUpdate, Lead, Payment
from tests.factories import callback_update, make_bot, make_funnel, make_seller, start_update

HEADER = "X-Telegram-Bot-Api-Secret-Token"


@pytest.fixture
def shop(db):
    with db.session() as session:
        seller, _ = make_seller(session)
        funnel = make_funnel(session, seller, downsells=1)
        bot = make_bot(session, seller, funnel)
        return {"bot": bot, "offer": funnel.offers[0].id}


def deliver(client, bot, body):
    resp = client.post(
        f"/webhook/telegram/{bot.id}", json=body, headers={HEADER: bot.webhook_secret}
    )
    assert resp.status_code == 200 and not resp.json.get("duplicate"), resp.json
    return resp.json


def age_inbound_rows(db, by: timedelta, update_id: int | None = None) -> None:
    """Move stored receipt times back (in Python: SQLite has no interval arithmetic)."""
    with db.session() as session:
        query = select(InboundUpdate)
        if update_id is not None:
            query = query.where(InboundUpdate.update_id == update_id)
        for row in session.scalars(query):
            row.received_at -= by
            if row.processed_at is not None:
                row.processed_at -= by


def let_time_pass(db, redis_client, days: float) -> None:
    """Stored receipt times move back and the Redis locks (TTL seconds) expire."""
    age_inbound_rows(db, timedelta(days=days))
    for pattern in ("*:upd:*", "*:start:*", "*:laststart:*", "*:msg:*", "*:sendm:*", "*:sendt:*"):
        for key in redis_client.scan_iter(pattern):
            redis_client.delete(key)


def welcomes(fake_tg, chat: int) -> int:
    return len(fake_tg.sent(method="sendPhoto", chat_id=chat))


def test_start_with_a_lower_update_id_a_week_later_resets_the_funnel_and_is_welcomed(
    client, shop, fake_tg, drain, db, redis_client
):
    bot, chat = shop["bot"], 7101
    deliver(client, bot, start_update(chat, update_id=1_000_000))
    deliver(client, bot, callback_update(chat, f"buy:{shop['offer']}", update_id=1_000_001))
    drain()  # a PIX charge; its downsell is scheduled and owns the lead's chain
    with db.session() as session:
        assert session.scalar(select(Lead).where(Lead.chat_id == chat)).downsell_root_id
    let_time_pass(db, redis_client, days=7)

    deliver(client, bot, start_update(chat, update_id=5))  # Telegram picked a new, lower id
    drain()
    drain(include_scheduled=True)  # the old charge's downsell comes due
    assert welcomes(fake_tg, chat) == 2
    with db.session() as session:
        assert session.scalar(select(Lead).where(Lead.chat_id == chat)).downsell_root_id is None
    # The downsell of the charge before the new /start lapsed with its generation.
    texts = [c["params"].get("text", "") for c in fake_tg.sent(method="sendMessage", chat_id=chat)]
    assert not any("Desconto" in t for t in texts)


def test_an_inbound_row_older_than_the_window_does_not_suppress_a_new_update(
    client, shop, fake_tg, drain, db, redis_client
):
    bot = shop["bot"]
    deliver(client, bot, start_update(7102, update_id=5))
    drain()
    assert welcomes(fake_tg, 7102) == 1
    let_time_pass(db, redis_client, days=8)

    # A week later update_id 5 is a new update (another user's /start).
    deliver(client, bot, start_update(7103, update_id=5))
    drain()
    assert welcomes(fake_tg, 7103) == 1
    with db.session() as session:
        rows = session.scalars(select(InboundUpdate).where(InboundUpdate.bot_id == bot.id)).all()
        assert len(rows) == 1 and rows[0].processed_at is not None


def test_an_update_seen_within_the_window_is_still_a_duplicate(shop, fake_tg, drain, db):
    bot, update_body = shop["bot"], start_update(7104, update_id=6)
    assert jobs.process_update(bot.id, update_body) == "start"
    age_inbound_rows(db, timedelta(hours=36))  # Telegram may still redeliver it
    assert jobs.process_update(bot.id, update_body) == "duplicate"
    drain()
    assert welcomes(fake_tg, 7104) == 1


def test_inbound_rows_past_the_window_are_purged_and_recent_ones_kept(shop, db):
    bot = shop["bot"]
    for update_id in (7, 8):
        jobs.process_update(bot.id, start_update(7105, update_id=update_id))
    age_inbound_rows(db, timedelta(days=3), update_id=7)
    assert reconcile.purge_inbound_updates()["found"] == 1
    with db.session() as session:
        left = session.scalars(select(InboundUpdate.update_id)).all()
    assert left == [8]


@pytest.fixture
def bump_shop(db):
    with db.session() as session:
        seller, _ = make_seller(session)
        funnel = make_funnel(session, seller, downsells=0, bump=True)
        bot = make_bot(session, seller, funnel)
        return {"bot": bot, "offer": funnel.offers[0].id}


def charges(db, bot) -> list[Payment]:
    with db.session() as session:
        return session.scalars(select(Payment).where(Payment.bot_id == bot.id)).all()


def pix_codes_sent(fake_tg, chat: int) -> int:
    texts = [c["params"].get("text", "") for c in fake_tg.sent(method="sendMessage", chat_id=chat)]
    return sum("PIX" in t for t in texts)


def bump_proposals(fake_tg, chat: int) -> int:
    texts = [c["params"].get("text", "") for c in fake_tg.sent(method="sendMessage", chat_id=chat)]
    return sum(t.startswith("Aproveite") for t in texts)


def test_a_tap_whose_update_id_an_old_tap_had_gets_a_new_charge(
    client, shop, fake_tg, drain, db, redis_client
):
    bot, chat = shop["bot"], 7106
    deliver(client, bot, start_update(chat, update_id=900))
    deliver(client, bot, callback_update(chat, f"buy:{shop['offer']}", update_id=901))
    drain()
    assert len(charges(db, bot)) == 1 and pix_codes_sent(fake_tg, chat) == 1
    let_time_pass(db, redis_client, days=8)

    # Telegram restarted its ids: the same offer tapped again arrives as update 901.
    deliver(client, bot, callback_update(chat, f"buy:{shop['offer']}", update_id=901))
    drain()
    assert len(charges(db, bot)) == 2
    assert pix_codes_sent(fake_tg, chat) == 2


def test_a_tap_whose_update_id_an_old_tap_had_is_proposed_the_bump_again(
    client, bump_shop, fake_tg, drain, db, redis_client
):
    bot, chat = bump_shop["bot"], 7107
    deliver(client, bot, start_update(chat, update_id=910))
    deliver(client, bot, callback_update(chat, f"buy:{bump_shop['offer']}", update_id=911))
    drain()
    assert bump_proposals(fake_tg, chat) == 1
    let_time_pass(db, redis_client, days=8)

    deliver(client, bot, callback_update(chat, f"buy:{bump_shop['offer']}", update_id=911))
    drain()
    assert bump_proposals(fake_tg, chat) == 2


def test_a_retried_tap_is_charged_and_proposed_the_bump_once(
    bump_shop, fake_tg, drain, db, redis_client
):
    bot, chat = bump_shop["bot"], 7108
    jobs.process_update(bot.id, start_update(chat, update_id=920))
    tap = callback_update(chat, f"buy:{bump_shop['offer']}", update_id=921)
    answer = callback_update(chat, f"bump:{bump_shop['offer']}:1", update_id=922)
    assert jobs.process_update(bot.id, tap) == "callback buy"
    assert jobs.process_update(bot.id, answer) == "callback bump"
    # Both jobs died after their work and before marking the update processed: they run again,
    # after the send locks (10 s) expired, so only the idempotency keys stand in the way.
    with db.session() as session:
        for row in session.scalars(select(InboundUpdate)):
            row.processed_at = None
    for key in redis_client.scan_iter("*:sendt:*"):
        redis_client.delete(key)
    jobs.process_update(bot.id, tap)
    jobs.process_update(bot.id, answer)
    drain()
    assert bump_proposals(fake_tg, chat) == 1
    assert len(charges(db, bot)) == 1 and pix_codes_sent(fake_tg, chat) == 1
