"""The customer journey end to end through the fake Telegram: click -> /start -> welcome ->
offer -> PIX -> downsell -> payment -> delivery, and the funnel's edge cases."""

from __future__ import annotations

from urllib.parse import parse_qs, urlsplit

import pytest
from sqlalchemy import select

from grimbots import telegram
from grimbots.models import BlockedUser, Click, Lead, OutboundMessage, Payment
from grimbots.payments import sandbox_event
from tests.factories import (
    callback_update,
    make_bot,
    make_funnel,
    make_pool,
    make_seller,
    start_update,
)

HEADER = "X-Telegram-Bot-Api-Secret-Token"


@pytest.fixture
def shop(db):
    with db.session() as session:
        seller, _ = make_seller(session)
        funnel = make_funnel(session, seller)
        bot = make_bot(session, seller, funnel)
        pool = make_pool(session, seller, [(bot, 1)])
        return {"bot": bot, "funnel": funnel, "pool": pool, "offers": [o.id for o in funnel.offers]}


def deliver(client, bot, update):
    resp = client.post(
        f"/webhook/telegram/{bot.id}", json=update, headers={HEADER: bot.webhook_secret}
    )
    assert resp.status_code == 200, resp.json
    return resp.json


def forget_start_locks(redis_client):
    """Stand-in for the seconds passing between two real /starts of one user."""
    for pattern in ("*:start:*", "*:laststart:*", "*:sendm:*", "*:sendt:*", "*:msg:*"):
        for key in redis_client.scan_iter(pattern):
            redis_client.delete(key)


def test_click_then_start_copies_attribution_and_sends_one_welcome(
    client, shop, fake_tg, drain, db
):
    bot = shop["bot"]
    resp = client.get(
        f"/go/{shop['pool'].slug}?utm_source=facebook&utm_campaign=black-friday&fbclid=abc",
        headers={"User-Agent": "Mozilla/5.0 test"},
    )
    assert resp.status_code == 302
    target = urlsplit(resp.headers["Location"])
    assert target.netloc == "t.me" and target.path == f"/{bot.username}"
    token = parse_qs(target.query)["start"][0]
    assert len(token) == 32

    deliver(client, bot, start_update(7001, token))
    drain()
    welcomes = fake_tg.sent(method="sendPhoto", chat_id=7001)
    assert len(welcomes) == 1
    params = welcomes[0]["params"]
    assert params["caption"].startswith("Bem-vindo")
    buttons = [row[0]["callback_data"] for row in params["reply_markup"]["inline_keyboard"]]
    assert buttons == [f"buy:{oid}" for oid in shop["offers"]]
    with db.session() as session:
        lead = session.scalar(select(Lead).where(Lead.telegram_user_id == 7001))
        attribution = (lead.utm_source, lead.utm_campaign, lead.fbclid)
        assert attribution == ("facebook", "black-friday", "abc")
        assert lead.click_token == token
        click = session.scalar(select(Click).where(Click.token == token))
        assert click is not None and click.user_agent == "Mozilla/5.0 test"


def test_unknown_tracking_slug_is_not_found(client, shop):
    assert client.get("/go/no-such-pool").status_code == 404
    assert client.get("/go/BAD!").status_code == 404


def test_pool_skips_banned_and_inactive_bots(client, db):
    with db.session() as session:
        seller, _ = make_seller(session)
        good = make_bot(session, seller)
        banned = make_bot(session, seller, status="banned")
        off = make_bot(session, seller, active=False)
        pool = make_pool(session, seller, [(banned, 1), (good, 1), (off, 1)])
    targets = {urlsplit(client.get(f"/go/{pool.slug}").headers["Location"]).path for _ in range(6)}
    assert targets == {f"/{good.username}"}


def test_round_robin_pool_alternates_bots(client, db):
    with db.session() as session:
        seller, _ = make_seller(session)
        a, b = make_bot(session, seller), make_bot(session, seller)
        pool = make_pool(session, seller, [(a, 1), (b, 1)])
    paths = [urlsplit(client.get(f"/go/{pool.slug}").headers["Location"]).path for _ in range(4)]
    assert paths[0] != paths[1] and paths[0] == paths[2] and paths[1] == paths[3]


def test_caption_over_telegram_limit_goes_as_a_separate_text_after_the_media(
    client, db, fake_tg, drain
):
    with db.session() as session:
        seller, _ = make_seller(session)
        funnel = make_funnel(session, seller, text="x" * 1500)
        bot = make_bot(session, seller, funnel)
    deliver(client, bot, start_update(7002))
    drain()
    calls = fake_tg.sent(chat_id=7002)
    assert [c["method"] for c in calls] == ["sendPhoto", "sendMessage"]
    assert "caption" not in calls[0]["params"]
    assert calls[1]["params"]["text"] == "x" * 1500
    assert "inline_keyboard" in calls[1]["params"]["reply_markup"]


def test_new_start_resets_the_funnel_and_sends_the_welcome_again(
    client, shop, fake_tg, drain, redis_client
):
    bot = shop["bot"]
    deliver(client, bot, start_update(7003))
    drain()
    forget_start_locks(redis_client)
    deliver(client, bot, start_update(7003))
    drain()
    assert len(fake_tg.sent(method="sendPhoto", chat_id=7003)) == 2


def test_two_starts_whose_welcomes_a_429_hold_bunched_together_get_a_welcome_each(
    client, shop, fake_tg, drain, redis_client
):
    """Two /starts seconds apart, their welcomes held back by Telegram's retry_after until
    both go out at once: the second is no twin of the first (issue 16, fault suite)."""
    bot = shop["bot"]
    telegram.RateLimiter(30, 1).penalize(bot.id, 3600)
    deliver(client, bot, start_update(7010))
    drain(include_scheduled=True, rounds=2)
    forget_start_locks(redis_client)  # the seconds between the two /starts
    deliver(client, bot, start_update(7010))
    drain(include_scheduled=True, rounds=2)
    assert fake_tg.sent(chat_id=7010) == []
    forget_start_locks(redis_client)  # the hold outlasts every lock's seconds
    redis_client.delete(telegram.RateLimiter.hold_key(bot.id))  # the hold ends
    drain(include_scheduled=True)
    assert len(fake_tg.sent(method="sendPhoto", chat_id=7010)) == 2


def test_offer_tap_creates_a_pix_charge_and_payment_delivers_access_once(
    client, app, shop, fake_tg, drain, db, settings
):
    bot, offer_id = shop["bot"], shop["offers"][0]
    deliver(client, bot, start_update(7004))
    deliver(client, bot, callback_update(7004, f"buy:{offer_id}"))
    drain()
    assert len(fake_tg.sent(method="answerCallbackQuery")) == 1
    with db.session() as session:
        payment = session.scalar(select(Payment).where(Payment.offer_id == offer_id))
        assert payment.status == "pending" and payment.amount_cents == 9700
        txid = payment.gateway_txid
    pix = [
        c for c in fake_tg.sent(method="sendMessage", chat_id=7004) if "PIX" in c["params"]["text"]
    ]
    assert len(pix) == 1 and payment.pix_code in pix[0]["params"]["text"]
    assert payment.pix_code.startswith("000201")

    body, headers = sandbox_event(settings, txid, "paid")
    for _ in range(3):  # the gateway retries its webhook: delivery must still happen once
        resp = client.post("/webhook/payment/sandbox", data=body, headers=headers)
        assert resp.status_code == 200
    drain(include_scheduled=True)
    deliveries = [
        c
        for c in fake_tg.sent(method="sendMessage", chat_id=7004)
        if "t.me/+vipgroup" in c["params"]["text"]
    ]
    assert len(deliveries) == 1
    downsells = [
        c
        for c in fake_tg.sent(method="sendMessage", chat_id=7004)
        if "Desconto" in c["params"]["text"]
    ]
    assert downsells == [], "payment must cancel pending downsells"
    with db.session() as session:
        assert session.get(Payment, payment.id).delivered_at is not None


def test_unpaid_charge_gets_chained_downsells_and_a_downsell_can_be_bought(
    client, shop, fake_tg, drain, db
):
    bot, offer_id = shop["bot"], shop["offers"][0]
    deliver(client, bot, start_update(7005))
    deliver(client, bot, callback_update(7005, f"buy:{offer_id}"))
    drain()
    drain(include_scheduled=True)  # the scheduler's delay passes
    texts = [c["params"]["text"] for c in fake_tg.sent(method="sendMessage", chat_id=7005)]
    assert sum("Desconto 1" in t for t in texts) == 1
    assert sum("Desconto 2" in t for t in texts) == 1
    first_ds = next(
        c
        for c in fake_tg.sent(method="sendMessage", chat_id=7005)
        if "Desconto 1" in c["params"]["text"]
    )
    data = first_ds["params"]["reply_markup"]["inline_keyboard"][0][0]["callback_data"]
    assert data.startswith("ds:") and len(data.encode()) <= 64
    deliver(client, bot, callback_update(7005, data))
    drain()
    with db.session() as session:
        prices = sorted(
            p.amount_cents for p in session.scalars(select(Payment).where(Payment.bot_id == bot.id))
        )
    assert prices == [4700, 9700]


def test_order_bump_is_proposed_and_added_to_the_charge(client, db, fake_tg, drain):
    with db.session() as session:
        seller, _ = make_seller(session)
        funnel = make_funnel(session, seller, bump=True, downsells=0)
        bot = make_bot(session, seller, funnel)
        main_offer = funnel.offers[0].id
    deliver(client, bot, start_update(7006))
    deliver(client, bot, callback_update(7006, f"buy:{main_offer}"))
    drain()
    bump = next(
        c
        for c in fake_tg.sent(method="sendMessage", chat_id=7006)
        if "Aproveite" in c["params"]["text"]
    )
    yes = bump["params"]["reply_markup"]["inline_keyboard"][0][0]["callback_data"]
    deliver(client, bot, callback_update(7006, yes))
    drain()
    with db.session() as session:
        payment = session.scalar(select(Payment).where(Payment.bot_id == bot.id))
    assert payment.amount_cents == 9700 + 1990


def test_user_who_blocked_the_bot_is_marked(client, shop, fake_tg, drain, db):
    bot = shop["bot"]
    fake_tg.add_fault(status=403, method="sendPhoto", chat_id=7007)
    deliver(client, bot, start_update(7007))
    drain()
    with db.session() as session:
        lead = session.scalar(select(Lead).where(Lead.telegram_user_id == 7007))
        assert lead.blocked is True
        assert session.scalar(select(BlockedUser).where(BlockedUser.telegram_user_id == 7007))
        row = session.scalar(select(OutboundMessage).where(OutboundMessage.chat_id == 7007))
        assert row.status == "blocked"


def test_my_chat_member_kicked_then_member_toggles_blocked(client, shop, drain, db):
    bot = shop["bot"]
    deliver(client, bot, start_update(7008))
    drain()
    for n, status in enumerate(("kicked", "member")):
        deliver(
            client,
            bot,
            {
                "update_id": 9_900_000 + n,
                "my_chat_member": {
                    "chat": {"id": 7008, "type": "private"},
                    "from": {"id": 7008, "is_bot": False, "first_name": "L"},
                    "date": 0,
                    "old_chat_member": {"status": "member"},
                    "new_chat_member": {"status": status},
                },
            },
        )
        drain()
        with db.session() as session:
            lead = session.scalar(select(Lead).where(Lead.telegram_user_id == 7008))
            assert lead.blocked is (status == "kicked")


def _hook_downsell_wait(monkeypatch, chat_id: int, during_wait) -> list[str]:
    """Run `during_wait` while a downsell's send waits in the rate limiter (Telegram's limits
    can hold it up to 30 s); returns the outbox keys that waited."""
    from grimbots import outbox
    from grimbots.telegram import RateLimiter

    acquire, send = RateLimiter.acquire, outbox.send
    sending: list[str] = []  # the outbox key being sent (the limiter does not know it)
    waited: list[str] = []

    def send_noting_the_key(bot, chat, key, *args, **kwargs):
        sending.append(key)
        try:
            return send(bot, chat, key, *args, **kwargs)
        finally:
            sending.pop()

    def waiting(self, bot_id, chat, *args, **kwargs):
        if chat == chat_id and sending and sending[-1].startswith("downsell:"):
            waited.append(sending[-1])
            during_wait()
        return acquire(self, bot_id, chat, *args, **kwargs)

    monkeypatch.setattr(outbox, "send", send_noting_the_key)
    monkeypatch.setattr(RateLimiter, "acquire", waiting)
    return waited


def _pending_charge(client, bot, offer_id, chat_id, drain, db) -> tuple[Payment, int]:
    deliver(client, bot, start_update(chat_id))
    deliver(client, bot, callback_update(chat_id, f"buy:{offer_id}"))
    drain()
    with db.session() as session:
        lead = session.scalar(select(Lead).where(Lead.bot_id == bot.id, Lead.chat_id == chat_id))
        payment = session.scalar(select(Payment).where(Payment.lead_id == lead.id))
        return payment, lead.funnel_generation


def test_a_payment_landing_while_the_downsell_waits_for_its_rate_slot_stops_the_downsell(
    client, shop, fake_tg, drain, db, settings, monkeypatch
):
    from grimbots import funnel

    bot, chat = shop["bot"], 7011
    payment, generation = _pending_charge(client, bot, shop["offers"][0], chat, drain, db)

    def customer_pays():
        body, headers = sandbox_event(settings, payment.gateway_txid, "paid")
        assert (
            client.post("/webhook/payment/sandbox", data=body, headers=headers).status_code == 200
        )

    waited = _hook_downsell_wait(monkeypatch, chat, customer_pays)
    assert funnel.run_downsell(payment.id, 0, generation) == "cancelled"
    assert waited == [f"downsell:{payment.id}:0"]  # the job really was past its first check
    drain(include_scheduled=True)
    texts = [c["params"]["text"] for c in fake_tg.sent(method="sendMessage", chat_id=chat)]
    assert not any("Desconto" in t for t in texts), "downsell sent after the payment"
    assert sum("t.me/+vipgroup" in t for t in texts) == 1
    with db.session() as session:
        row = session.scalar(
            select(OutboundMessage).where(
                OutboundMessage.idempotency_key == f"downsell:{payment.id}:0"
            )
        )
        assert row.status == "cancelled"


def test_a_downsell_that_waits_for_its_rate_slot_without_a_payment_is_still_sent(
    client, shop, fake_tg, drain, db, monkeypatch
):
    from grimbots import funnel

    bot, chat = shop["bot"], 7012
    payment, generation = _pending_charge(client, bot, shop["offers"][0], chat, drain, db)
    waited = _hook_downsell_wait(monkeypatch, chat, lambda: None)
    assert funnel.run_downsell(payment.id, 0, generation) == "sent"
    assert waited == [f"downsell:{payment.id}:0"]
    texts = [c["params"]["text"] for c in fake_tg.sent(method="sendMessage", chat_id=chat)]
    assert sum("Desconto 1" in t for t in texts) == 1


def _member_update(update_id: int, user_id: int, chat: dict, status: str) -> dict:
    return {
        "update_id": update_id,
        "my_chat_member": {
            "chat": chat,
            "from": {"id": user_id, "is_bot": False, "first_name": "L"},
            "date": 0,
            "old_chat_member": {"status": "member"},
            "new_chat_member": {"status": status},
        },
    }


@pytest.mark.parametrize("chat_type", ["group", "supergroup", "channel"])
def test_membership_changes_outside_the_private_chat_leave_the_block_flag_alone(
    client, shop, drain, db, chat_type
):
    bot, user = shop["bot"], 7009
    deliver(client, bot, start_update(user))
    drain()
    group = {"id": -1001234567, "type": chat_type, "title": "Grupo"}
    # Removed from a group: the user has not blocked the bot in private.
    deliver(client, bot, _member_update(9_910_000, user, group, "kicked"))
    drain()
    with db.session() as session:
        assert session.scalar(select(Lead).where(Lead.telegram_user_id == user)).blocked is False
        assert (
            session.scalar(select(BlockedUser).where(BlockedUser.telegram_user_id == user)) is None
        )
    # Blocked in private, then added to a group: still blocked.
    private = {"id": user, "type": "private"}
    deliver(client, bot, _member_update(9_910_001, user, private, "kicked"))
    drain()
    deliver(client, bot, _member_update(9_910_002, user, group, "member"))
    drain()
    with db.session() as session:
        assert session.scalar(select(Lead).where(Lead.telegram_user_id == user)).blocked is True
        assert session.scalar(select(BlockedUser).where(BlockedUser.telegram_user_id == user))


def test_hostile_tracking_query_is_stored_clean_and_the_start_still_works(
    client, shop, fake_tg, drain, db
):
    bot = shop["bot"]
    query = "&".join(
        [
            "utm_source=%00",  # NUL: PostgreSQL's text refuses it
            "utm_medium=ads%00%01%1f%7fnet",
            "utm_campaign=" + "c" * 100_000,
            "utm_content=%ff%fe%c3",  # not UTF-8
            "utm_term=first&utm_term=second",
            "fbclid=" + "%00" * 5000 + "f" * 600,
        ]
    )
    resp = client.get(
        f"/go/{shop['pool'].slug}?{query}", headers={"User-Agent": "Bad\x00Agent\x01" + "u" * 900}
    )
    assert resp.status_code == 302
    token = parse_qs(urlsplit(resp.headers["Location"]).query)["start"][0]
    deliver(client, bot, start_update(7010, token))
    drain()
    assert len(fake_tg.sent(method="sendPhoto", chat_id=7010)) == 1
    expected = {
        "utm_source": None,
        "utm_medium": "adsnet",
        "utm_campaign": "c" * 200,
        "utm_term": "first",
        "fbclid": "f" * 500,
    }
    with db.session() as session:
        lead = session.scalar(select(Lead).where(Lead.telegram_user_id == 7010))
        click = session.scalar(select(Click).where(Click.token == token))
        assert click is not None and lead.click_token == token
        for field, value in expected.items():
            assert (getattr(lead, field), getattr(click, field)) == (value, value), field
        assert click.user_agent == "BadAgent" + "u" * 492
        # Bad UTF-8 escapes: werkzeug keeps or replaces them; either way a storable string.
        assert lead.utm_content == click.utm_content and click.utm_content.encode()


def _pix_texts(fake_tg, chat: int, payment: Payment) -> list[str]:
    return [
        c["params"]["text"]
        for c in fake_tg.sent(method="sendMessage", chat_id=chat)
        if payment.pix_code in c["params"]["text"]
    ]


def _only_payment(db, bot, chat: int) -> Payment:
    with db.session() as session:
        return session.scalar(
            select(Payment).join(Lead).where(Lead.bot_id == bot.id, Lead.chat_id == chat)
        )


def _outbox_status(db, key: str) -> str:
    with db.session() as session:
        return session.scalar(
            select(OutboundMessage.status).where(OutboundMessage.idempotency_key == key)
        )


def _pay(client, settings, payment: Payment) -> None:
    body, headers = sandbox_event(settings, payment.gateway_txid, "paid")
    assert client.post("/webhook/payment/sandbox", data=body, headers=headers).status_code == 200


def test_a_retried_charge_job_sends_no_pix_code_once_the_charge_was_paid(
    client, shop, fake_tg, drain, db, settings, monkeypatch
):
    """Payment confirmed between the job's enqueue (its retry) and its run."""
    import redis

    from grimbots.telegram import RateLimiter

    bot, chat = shop["bot"], 7021
    acquire = RateLimiter.acquire
    failed: list[int] = []

    def limiter_down_for_the_pix(self, bot_id, chat_id, *args, **kwargs):
        if chat_id == chat and not failed and _only_payment(db, bot, chat) is not None:
            failed.append(chat_id)  # the first PIX attempt: nothing goes out, the job retries
            raise redis.ConnectionError("limiter unreachable")
        return acquire(self, bot_id, chat_id, *args, **kwargs)

    monkeypatch.setattr(RateLimiter, "acquire", limiter_down_for_the_pix)
    deliver(client, bot, start_update(chat))
    deliver(client, bot, callback_update(chat, f"buy:{shop['offers'][0]}"))
    drain()
    payment = _only_payment(db, bot, chat)
    assert failed == [chat] and _pix_texts(fake_tg, chat, payment) == []
    assert _outbox_status(db, f"pix:{payment.id}") == "pending"  # the retry would send it

    _pay(client, settings, payment)  # the customer paid before the retry ran
    drain(include_scheduled=True)  # the delivery, then the retried charge job

    assert _pix_texts(fake_tg, chat, payment) == [], "PIX code sent after the charge was paid"
    assert _outbox_status(db, f"pix:{payment.id}") == "cancelled"
    texts = [c["params"]["text"] for c in fake_tg.sent(method="sendMessage", chat_id=chat)]
    assert sum("t.me/+vipgroup" in t for t in texts) == 1


def test_a_payment_landing_right_before_the_pix_send_is_decided_stops_the_send(
    client, shop, fake_tg, drain, db, settings, monkeypatch
):
    """The payment commits after every check outside the fence's transaction (the rate slot is
    granted) and before the fence: only a check inside that transaction can see it."""
    from grimbots import outbox

    bot, chat = shop["bot"], 7022
    fence = outbox._fence
    paid: list[str] = []

    def customer_pays_first(key, attempt, *args, **kwargs):
        if key.startswith("pix:") and not paid:
            paid.append(key)
            _pay(client, settings, _only_payment(db, bot, chat))
        return fence(key, attempt, *args, **kwargs)

    monkeypatch.setattr(outbox, "_fence", customer_pays_first)
    deliver(client, bot, start_update(chat))
    deliver(client, bot, callback_update(chat, f"buy:{shop['offers'][0]}"))
    drain(include_scheduled=True)

    payment = _only_payment(db, bot, chat)
    assert paid == [f"pix:{payment.id}"]
    assert _pix_texts(fake_tg, chat, payment) == [], "PIX code sent after the charge was paid"
    assert _outbox_status(db, f"pix:{payment.id}") == "cancelled"
    texts = [c["params"]["text"] for c in fake_tg.sent(method="sendMessage", chat_id=chat)]
    assert sum("t.me/+vipgroup" in t for t in texts) == 1


def test_an_unpaid_charge_still_gets_its_pix_code_once(client, shop, fake_tg, drain, db):
    bot, chat = shop["bot"], 7023
    deliver(client, bot, start_update(chat))
    deliver(client, bot, callback_update(chat, f"buy:{shop['offers'][0]}"))
    drain()
    drain()  # nothing left to run: a second drain must not send it again
    payment = _only_payment(db, bot, chat)
    assert len(_pix_texts(fake_tg, chat, payment)) == 1
    assert _outbox_status(db, f"pix:{payment.id}") == "sent"


def test_a_payment_landing_right_before_the_downsell_send_is_decided_stops_the_downsell(
    client, shop, fake_tg, drain, db, settings, monkeypatch
):
    """After the rate slot and `still_due`, before the fence: only the fence's guard sees it."""
    from grimbots import funnel, outbox

    bot, chat = shop["bot"], 7024
    payment, generation = _pending_charge(client, bot, shop["offers"][0], chat, drain, db)
    fence = outbox._fence
    paid: list[str] = []

    def customer_pays_first(key, attempt, *args, **kwargs):
        if key.startswith("downsell:") and not paid:
            paid.append(key)
            _pay(client, settings, payment)
        return fence(key, attempt, *args, **kwargs)

    monkeypatch.setattr(outbox, "_fence", customer_pays_first)
    assert funnel.run_downsell(payment.id, 0, generation) == "cancelled"
    assert paid == [f"downsell:{payment.id}:0"]
    drain(include_scheduled=True)
    texts = [c["params"]["text"] for c in fake_tg.sent(method="sendMessage", chat_id=chat)]
    assert not any("Desconto" in t for t in texts), "downsell sent after the payment"
    assert sum("t.me/+vipgroup" in t for t in texts) == 1
