"""Faults after which work must still finish exactly once: long Telegram outages, lost enqueues,
lost commit answers, standby lag, twin charges. Each test breaks the path the way production
did, then checks what reached the fake Telegram."""

from __future__ import annotations

import dataclasses
from datetime import timedelta

import pytest
from sqlalchemy import func, select
from sqlalchemy.exc import DBAPIError

from grimbots import campaigns, funnel, jobs, outbox, queues, reconcile, redis_pool, telegram
from grimbots import db as db_module
from grimbots.models import Base, Campaign, Funnel, Lead, OutboundMessage, Payment, utcnow
from grimbots.payments import delivery_job_id, sandbox_event
from tests.factories import callback_update, make_bot, make_funnel, make_seller, start_update

PAY_URL = "/webhook/payment/sandbox"


@pytest.fixture
def no_grace(settings):
    """Reconcilers act at once (GRIMBOTS_RECONCILE_GRACE=0), as after the grace time passed."""
    pools = redis_pool.get_pools()
    pools.settings = dataclasses.replace(pools.settings, reconcile_grace=0)
    return pools.settings


@pytest.fixture
def shop(db):
    with db.session() as session:
        seller, token = make_seller(session)
        shop_funnel = make_funnel(session, seller)
        bot = make_bot(session, seller, shop_funnel)
        return {"bot": bot, "offers": [o.id for o in shop_funnel.offers], "token": token}


def texts(fake_tg, chat_id: int, needle: str) -> int:
    calls = fake_tg.sent(method="sendMessage", chat_id=chat_id)
    return sum(needle in (c["params"].get("text") or "") for c in calls)


def charge(bot, chat_id: int, offer_id: int, drain) -> Payment:
    jobs.process_update(bot.id, start_update(chat_id))
    jobs.process_update(bot.id, callback_update(chat_id, f"buy:{offer_id}"))
    drain()
    with db_module.get_db().session() as session:
        return session.scalars(
            select(Payment).where(Payment.bot_id == bot.id).order_by(Payment.id.desc())
        ).first()


def pay(client, settings, payment: Payment):
    body, headers = sandbox_event(settings, payment.gateway_txid, "paid", payment.amount_cents)
    return client.post(PAY_URL, data=body, headers=headers)


def long_outage(redis_client, bot) -> None:
    """Telegram held every send of the bot back for longer than the job's retries last."""
    telegram.RateLimiter(30, 1).penalize(bot.id, 3600)


def outage_over(redis_client, bot) -> None:
    redis_client.delete(telegram.RateLimiter.hold_key(bot.id))


def test_paid_order_is_delivered_once_after_an_outage_longer_than_every_retry(
    client, settings, shop, fake_tg, drain, redis_client, no_grace, db
):
    bot = shop["bot"]
    payment = charge(bot, 5101, shop["offers"][0], drain)
    long_outage(redis_client, bot)
    assert pay(client, settings, payment).status_code == 200
    drain(include_scheduled=True)  # more tries than the delivery job's retry budget
    assert texts(fake_tg, 5101, "Pagamento confirmado") == 0
    # An outage does not spend the budget: the job waits it out instead of being parked.
    assert queues.in_flight(delivery_job_id(payment.id))
    # The gateway repeats its webhook meanwhile: the old 7-day marker made this a no-op for good.
    redis_client.delete(f"gb:payment:{payment.id}:delivery_enqueued")
    assert pay(client, settings, payment).json["duplicate"] is True
    drain(include_scheduled=True)
    outage_over(redis_client, bot)
    assert reconcile.reconcile_payments()["repaired"] == 0  # its job is still in flight
    drain(include_scheduled=True)
    assert texts(fake_tg, 5101, "Pagamento confirmado") == 1
    with db.session() as session:
        assert session.get(Payment, payment.id).delivered_at is not None
    assert reconcile.reconcile_payments() == {"reconciler": "payments", "found": 0, "repaired": 0}
    drain(include_scheduled=True)
    assert texts(fake_tg, 5101, "Pagamento confirmado") == 1


def test_a_delivery_whose_send_is_ambiguous_is_not_retried_by_the_reconciler(
    client, settings, shop, fake_tg, drain, no_grace, db
):
    bot = shop["bot"]
    payment = charge(bot, 5102, shop["offers"][0], drain)
    fake_tg.add_fault(status=None, method="sendMessage", delay=3.0, chat_id=5102)
    pay(client, settings, payment)
    drain(include_scheduled=True)
    assert reconcile.reconcile_payments()["repaired"] == 0
    assert queues.get_queue(queues.TASKS).count == 0


def test_outbox_rows_left_pending_are_sent_once_by_the_reconciler(shop, fake_tg, db, no_grace):
    bot = shop["bot"]
    with db.session() as session:
        session.add(
            OutboundMessage(
                bot_id=bot.id,
                chat_id=5103,
                idempotency_key="left-behind",
                method="sendMessage",
                payload={"chat_id": 5103, "text": "finish me"},
                status="pending",
                claimed_at=None,
                attempts=1,
                created_at=utcnow() - timedelta(minutes=5),
            )
        )
    assert reconcile.reconcile_outbox()["repaired"] == 1
    assert reconcile.reconcile_outbox()["found"] == 0
    assert texts(fake_tg, 5103, "finish me") == 1


def test_the_reconciler_cancels_a_pending_downsell_of_a_lead_who_paid(
    client, settings, shop, fake_tg, drain, db, no_grace
):
    bot = shop["bot"]
    payment = charge(bot, 5104, shop["offers"][0], drain)
    pay(client, settings, payment)
    with db.session() as session:
        session.add(
            OutboundMessage(
                bot_id=bot.id,
                chat_id=5104,
                idempotency_key=f"downsell:{payment.id}:0",
                method="sendMessage",
                payload={"chat_id": 5104, "text": "Desconto 1"},
                status="pending",
                attempts=1,
            )
        )
    reconcile.reconcile_outbox()
    assert texts(fake_tg, 5104, "Desconto") == 0


def test_two_charges_of_one_lead_start_one_downsell_chain(shop, fake_tg, drain, db):
    bot = shop["bot"]
    jobs.process_update(bot.id, start_update(5105))
    jobs.process_update(bot.id, callback_update(5105, f"buy:{shop['offers'][0]}"))
    jobs.process_update(bot.id, callback_update(5105, f"buy:{shop['offers'][1]}"))
    drain()
    with db.session() as session:
        assert session.scalar(select(func.count()).select_from(Payment)) == 2
    drain(include_scheduled=True)
    assert texts(fake_tg, 5105, "Desconto 1") == 1
    assert texts(fake_tg, 5105, "Desconto 2") == 1


def test_money_reads_use_the_primary_not_a_lagging_standby(
    client, settings, shop, fake_tg, drain, db, tmp_path
):
    """A read URL pointing at a copy that never sees the payment: nothing may depend on it."""
    bot = shop["bot"]
    payment = charge(bot, 5106, shop["offers"][0], drain)
    stale = f"sqlite:///{tmp_path / 'standby.db'}"
    engine = db_module.make_engine(stale)
    Base.metadata.create_all(engine)
    engine.dispose()
    db_module.reset_db()
    db_module.get_db(dataclasses.replace(settings, database_read_url=stale))
    pay(client, settings, payment)
    drain(include_scheduled=True)
    assert texts(fake_tg, 5106, "Pagamento confirmado") == 1
    assert texts(fake_tg, 5106, "Desconto") == 0


def lose_the_answer_of_the_first_commit(monkeypatch, database) -> dict:
    """The commit succeeds, then the connection dies before its answer arrives."""
    original = database._run_once
    state = {"lost": 0}

    def run_once(fn, key):
        result = original(fn, key)
        if not state["lost"]:
            state["lost"] += 1
            raise DBAPIError(
                "COMMIT", None, Exception("connection lost"), connection_invalidated=True
            )
        return result

    monkeypatch.setattr(database, "_run_once", run_once)
    return state


def test_a_batch_whose_commit_answer_was_lost_does_not_strand_the_campaign(
    shop, fake_tg, drain, db, monkeypatch
):
    bot = shop["bot"]
    with db.session() as session:
        session.add_all(
            [Lead(bot_id=bot.id, telegram_user_id=c, chat_id=c) for c in (5201, 5202, 5203)]
        )
        campaign = Campaign(seller_id=bot.seller_id, bot_id=bot.id, name="c", text="promo!")
        session.add(campaign)
        session.flush()
        campaigns.start_campaign(session, campaign)
        campaign_id = campaign.id
    state = lose_the_answer_of_the_first_commit(monkeypatch, db)
    result = campaigns.run_campaign_batch(campaign_id, batch_size=2)
    assert state["lost"] == 1 and result["outcome"] == "continuing"
    drain()
    with db.session() as session:
        done = session.get(Campaign, campaign_id)
        assert (done.status, done.sent) == ("finished", 3)
    assert sorted(c["chat_id"] for c in fake_tg.sent(token=bot.token)) == [5201, 5202, 5203]


def api(client, shop, method, path, body=None, **headers):
    headers["Authorization"] = f"Bearer {shop['token']}"
    return client.open(path, method=method, json=body, headers=headers)


def test_a_create_whose_commit_answer_was_lost_creates_one_funnel(client, shop, db, monkeypatch):
    state = lose_the_answer_of_the_first_commit(monkeypatch, db)
    resp = api(client, shop, "POST", "/api/funnels", {"name": "once", "welcome_text": "Oi"})
    assert resp.status_code == 201 and state["lost"] == 1
    with db.session() as session:
        assert session.scalar(select(func.count()).where(Funnel.name == "once")) == 1


def test_a_campaign_start_whose_commit_answer_was_lost_answers_202(client, shop, db, monkeypatch):
    created = api(
        client, shop, "POST", "/api/campaigns", {"bot_id": shop["bot"].id, "name": "n", "text": "t"}
    ).json
    lose_the_answer_of_the_first_commit(monkeypatch, db)
    resp = api(client, shop, "POST", f"/api/campaigns/{created['id']}/start")
    assert resp.status_code == 202 and resp.json["status"] == "running"
    assert queues.get_queue(queues.MARATHON).count == 1


def test_an_idempotency_key_makes_a_repeated_create_return_the_first_result(client, shop, db):
    first = api(
        client,
        shop,
        "POST",
        "/api/funnels",
        {"name": "k", "welcome_text": "Oi"},
        **{"Idempotency-Key": "a1"},
    )
    again = api(
        client,
        shop,
        "POST",
        "/api/funnels",
        {"name": "k", "welcome_text": "Oi"},
        **{"Idempotency-Key": "a1"},
    )
    other = api(
        client,
        shop,
        "POST",
        "/api/funnels",
        {"name": "k", "welcome_text": "Oi"},
        **{"Idempotency-Key": "b2"},
    )
    assert first.status_code == again.status_code == other.status_code == 201
    assert first.json["id"] == again.json["id"] != other.json["id"]
    with db.session() as session:
        assert session.scalar(select(func.count()).where(Funnel.name == "k")) == 2


def stuck_campaign(client, shop, fake_tg) -> int:
    """A running campaign whose batch job was lost (the queue forgot it)."""
    created = api(
        client, shop, "POST", "/api/campaigns", {"bot_id": shop["bot"].id, "name": "n", "text": "t"}
    ).json
    assert api(client, shop, "POST", f"/api/campaigns/{created['id']}/start").status_code == 202
    queues.get_queue(queues.MARATHON).empty()
    return created["id"]


def test_a_stuck_campaign_is_resumed_through_the_api(client, shop, db, fake_tg, drain):
    with db.session() as session:
        session.add(Lead(bot_id=shop["bot"].id, telegram_user_id=5301, chat_id=5301))
    campaign_id = stuck_campaign(client, shop, fake_tg)
    resp = api(client, shop, "POST", f"/api/campaigns/{campaign_id}/resume")
    assert resp.status_code == 202 and resp.json["requeued"] is True
    again = api(client, shop, "POST", f"/api/campaigns/{campaign_id}/resume")
    assert again.json["requeued"] is False  # a batch in flight is not doubled
    drain()
    assert api(client, shop, "GET", f"/api/campaigns/{campaign_id}").json["status"] == "finished"
    assert [c["chat_id"] for c in fake_tg.sent(token=shop["bot"].token)] == [5301]


def test_a_stuck_campaign_can_be_stopped_through_the_api(client, shop, db, fake_tg, drain):
    campaign_id = stuck_campaign(client, shop, fake_tg)
    assert api(client, shop, "POST", f"/api/campaigns/{campaign_id}/stop").status_code == 202
    drain()
    assert api(client, shop, "GET", f"/api/campaigns/{campaign_id}").json["status"] == "stopped"


def test_the_campaign_reconciler_restarts_a_broken_chain(
    client, shop, db, fake_tg, drain, no_grace
):
    with db.session() as session:
        session.add(Lead(bot_id=shop["bot"].id, telegram_user_id=5302, chat_id=5302))
    campaign_id = stuck_campaign(client, shop, fake_tg)
    assert reconcile.reconcile_campaigns()["repaired"] == 1
    drain()
    with db.session() as session:
        assert session.get(Campaign, campaign_id).status == "finished"
    assert reconcile.reconcile_campaigns()["found"] == 0


def test_reconcilers_are_enqueued_once_per_interval_across_workers(settings, redis_client):
    from grimbots.redis_pool import queue_connection

    conn = queue_connection()
    first = reconcile.schedule_due(conn)
    second = reconcile.schedule_due(conn)
    assert sorted(first) == sorted(fn.__name__ for fn in reconcile.RECONCILERS)
    assert second == []
    assert queues.get_queue(queues.TASKS).count == len(reconcile.RECONCILERS)


def test_a_retried_job_takes_over_its_own_claim_at_once(shop, fake_tg, db, monkeypatch):
    """The claim's INSERT committed but its answer was lost: the job's retry must send."""
    from types import SimpleNamespace

    monkeypatch.setattr(outbox, "get_current_job", lambda: SimpleNamespace(id="job-1"))
    with db.session() as session:
        session.add(
            OutboundMessage(
                bot_id=shop["bot"].id,
                chat_id=5401,
                idempotency_key="k-own",
                method="sendMessage",
                payload={"chat_id": 5401, "text": "x"},
                status="pending",
                claimed_at=utcnow(),
                claimed_by="job-1",
                attempts=1,
            )
        )
    assert outbox.send(shop["bot"], 5401, "k-own", "sendMessage", {"text": "x"}) == "sent"
    assert texts(fake_tg, 5401, "x") == 1


def test_deliver_access_reports_an_unpaid_payment_without_sending(shop, fake_tg, drain, db):
    payment = charge(shop["bot"], 5501, shop["offers"][0], drain)
    assert funnel.deliver_access(payment.id) == "not paid"
    assert texts(fake_tg, 5501, "Pagamento") == 0


def test_a_retried_start_keeps_the_downsell_chain_of_its_generation(shop, fake_tg, drain, db):
    """faults F12: the retry of a /start ran after a tap had claimed the chain, reset it, and
    the next tap started a second chain."""
    bot = shop["bot"]
    start = start_update(5601)
    jobs.process_update(bot.id, start)
    jobs.process_update(bot.id, callback_update(5601, f"buy:{shop['offers'][0]}"))
    drain()
    with db.session() as session:
        lead = session.scalar(select(Lead).where(Lead.chat_id == 5601))
        assert lead.downsell_root_id is not None
    funnel.start(bot, lead, "", lead.funnel_generation)  # the /start's job, run again
    jobs.process_update(bot.id, callback_update(5601, f"buy:{shop['offers'][1]}"))
    drain(include_scheduled=True)
    assert texts(fake_tg, 5601, "Desconto 1") == 1


def set_active(client, shop, active: bool) -> None:
    resp = client.patch(
        f"/api/bots/{shop['bot'].id}",
        json={"active": active},
        headers={"Authorization": f"Bearer {shop['token']}"},
    )
    assert resp.status_code == 200 and resp.json["active"] is active


def test_a_payment_confirmed_while_the_bot_is_inactive_is_delivered_once_on_reactivation(
    client, settings, shop, fake_tg, drain, db, no_grace
):
    bot = shop["bot"]
    payment = charge(bot, 5110, shop["offers"][0], drain)
    set_active(client, shop, False)
    assert pay(client, settings, payment).status_code == 200
    drain(include_scheduled=True)
    reconcile.reconcile_payments()
    reconcile.reconcile_outbox()
    drain(include_scheduled=True)
    assert texts(fake_tg, 5110, "Pagamento confirmado") == 0  # held while the bot is inactive
    set_active(client, shop, True)
    for _ in range(2):  # the worker and both reconcilers, twice: still one link
        drain(include_scheduled=True)
        reconcile.reconcile_payments()
        reconcile.reconcile_outbox()
        drain(include_scheduled=True)
    assert texts(fake_tg, 5110, "t.me/+vipgroup") == 1
    with db.session() as session:
        assert session.get(Payment, payment.id).delivered_at is not None


def test_a_delivery_pending_when_its_bot_was_deactivated_is_held_then_sent_once(
    client, settings, shop, fake_tg, drain, redis_client, db, no_grace
):
    bot = shop["bot"]
    payment = charge(bot, 5111, shop["offers"][0], drain)
    long_outage(redis_client, bot)
    pay(client, settings, payment)
    drain(include_scheduled=True)  # every retry spent: the delivery row is left pending
    set_active(client, shop, False)
    outage_over(redis_client, bot)
    with db.session() as session:  # inactive for longer than the outbox's horizon
        session.execute(
            OutboundMessage.__table__.update()
            .where(OutboundMessage.idempotency_key == f"delivery:{payment.id}")
            .values(created_at=utcnow() - reconcile.OUTBOX_MAX_AGE - timedelta(hours=1))
        )
    reconcile.reconcile_outbox()
    reconcile.reconcile_payments()
    drain(include_scheduled=True)
    assert texts(fake_tg, 5111, "Pagamento confirmado") == 0
    with db.session() as session:
        row = session.scalar(
            select(OutboundMessage).where(
                OutboundMessage.idempotency_key == f"delivery:{payment.id}"
            )
        )
        assert row.status == "pending"  # held, not cancelled for good
    set_active(client, shop, True)
    for _ in range(2):
        reconcile.reconcile_outbox()
        reconcile.reconcile_payments()
        drain(include_scheduled=True)
    assert texts(fake_tg, 5111, "Pagamento confirmado") == 1
    with db.session() as session:
        assert session.get(Payment, payment.id).delivered_at is not None


def test_a_delivery_cancelled_for_an_inactive_bot_before_this_fix_is_sent_once_when_active(
    client, settings, shop, fake_tg, drain, redis_client, db, no_grace
):
    bot = shop["bot"]
    payment = charge(bot, 5112, shop["offers"][0], drain)
    long_outage(redis_client, bot)
    pay(client, settings, payment)
    drain(include_scheduled=True)
    outage_over(redis_client, bot)
    with db.session() as session:  # what the old reconciler did to it
        session.execute(
            OutboundMessage.__table__.update()
            .where(OutboundMessage.idempotency_key == f"delivery:{payment.id}")
            .values(status="cancelled", error="bot gone or inactive", claimed_at=None)
        )
    for _ in range(2):
        reconcile.reconcile_payments()
        reconcile.reconcile_outbox()
        drain(include_scheduled=True)
    assert texts(fake_tg, 5112, "Pagamento confirmado") == 1


def test_the_reconciler_settles_a_row_left_in_flight_as_ambiguous_without_sending(
    shop, fake_tg, db, no_grace
):
    with db.session() as session:
        session.add(
            OutboundMessage(
                bot_id=shop["bot"].id,
                chat_id=5402,
                idempotency_key="k-left-in-flight",
                method="sendMessage",
                payload={"chat_id": 5402, "text": "x"},
                status=outbox.INFLIGHT,
                claimed_at=utcnow() - outbox.CLAIM_LEASE - timedelta(seconds=1),
                attempts=1,
            )
        )
    reconcile.reconcile_outbox()
    with db.session() as session:
        status = session.scalar(
            select(OutboundMessage.status).where(
                OutboundMessage.idempotency_key == "k-left-in-flight"
            )
        )
    assert status == "ambiguous"
    assert fake_tg.calls(chat_id=5402) == []
