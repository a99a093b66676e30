"""Scenario inputs drawn like faults (see scenario.EXTRA_KINDS): a /start that comes from a /go
click with a hostile query string, update ids that restart low, a payment that arrives while
the lead's downsells wait. Each records whether it fired in `run.fired`."""

from __future__ import annotations

import secrets
from types import SimpleNamespace

from rq import Queue
from sqlalchemy import select

from faults.scenario import HOSTILE_QUERIES
from grimbots.models import Bot, Lead, Payment, Seller
from grimbots.queues import TASKS
from tests.factories import make_pool

LOW_UPDATE_BASE = 100


def go_click(run, query: int, lead: int) -> str | None:
    """GET /go/<slug>?<hostile query> for the lead's bot; the /start token it hands out
    (None if it handed none out). Every answer is kept in `run.go_answers`."""
    bot_id = run.bot(lead).bot_id
    if bot_id not in run.go_slug:
        with run.hdb.session() as session:
            bot = session.get(Bot, bot_id)
            seller = session.get(Seller, bot.seller_id)
            slug = f"go-{run.s.index}-{secrets.token_hex(3)}"
            make_pool(session, seller, [(bot, 1)], slug=slug)
        run.go_slug[bot_id] = slug
        if run.standby is not None:
            run.standby.catch_up()  # /go reads the pool from the read URL
    try:
        resp = run.client.get(f"/go/{run.go_slug[bot_id]}?{HOSTILE_QUERIES[query]}")
        status, location = resp.status_code, resp.headers.get("Location") or ""
    except Exception as exc:  # noqa: BLE001 - an escaped exception is a 500 to the visitor
        run.notes.append(f"/go raised {type(exc).__name__}: {exc}")
        status, location = 500, ""
    run.go_answers.append(status)
    token = location.partition("?start=")[2] or None
    if token:
        run.go_tokens.append(token)
        run.fired["hostile_go"] += 1
    return token


def restart_update_ids(run) -> None:
    """Telegram's update ids for this bot start over low (a webhook re-set after a long pause):
    the next updates carry ids below every earlier one."""
    run.low_restarts += 1
    run._next_update = LOW_UPDATE_BASE * run.low_restarts
    run.fired["update_id_low"] += 1


def downsells_waiting(conn) -> int:
    """Downsell jobs scheduled and not run yet (read on the harness's connection `conn`)."""
    queue = Queue(TASKS, connection=conn)
    registry = queue.scheduled_job_registry
    waiting = 0
    for job_id in registry.get_job_ids(0, -1):
        job = queue.fetch_job(job_id)
        if job is not None and job.func_name.endswith("run_downsell"):
            waiting += 1
    return waiting


def _latest_payment(run, lead: int) -> SimpleNamespace | None:
    with run.hdb.session() as session:
        p = session.scalars(
            select(Payment)
            .join(Lead, Lead.id == Payment.lead_id)
            .where(Lead.bot_id == run.bot(lead).bot_id, Lead.telegram_user_id == run.chats[lead])
            .order_by(Payment.id.desc())
        ).first()
        if p is None:
            return None
        return SimpleNamespace(
            id=p.id, gateway_txid=p.gateway_txid, amount_cents=p.amount_cents, status=p.status
        )


def _malformed_bodies(txid: str, amount: int) -> list[bytes]:
    """Bodies a buggy or hostile sender signs with the real secret: each must answer 400."""
    ok = f'"txid": "{txid}", "status": "paid"'
    return [
        f'{{{ok}, "amount_cents": "{amount}"}}'.encode(),
        f'{{{ok}, "amount_cents": -{amount}}}'.encode(),
        f'{{"txid": "{txid}\\u0000", "status": "paid", "amount_cents": {amount}}}'.encode(),
        f'{{{ok}, "amount_cents": true}}'.encode(),
        f'{{{ok}, "amount_cents": {amount}.5}}'.encode(),
        f'{{{ok}, "amount_cents": 99999999999999999999}}'.encode(),
        f'{{"txid": "{txid}", "status": "PAID", "amount_cents": {amount}}}'.encode(),
        f'{{{ok}, "amount_cents": {amount}'.encode(),  # cut short
        b"\xff\xfe" + f'{{{ok}, "amount_cents": {amount}}}'.encode(),
        b"[" * 5000 + b"]" * 5000,
        f'[{{{ok}, "amount_cents": {amount}}}]'.encode(),
    ]


def post_malformed(run, lead: int, picks: list[int]) -> None:
    """Before the real confirmation, the gateway's endpoint gets signed malformed bodies for the
    lead's charge; each answer and whether the charge was paid after it go to run.malformed."""
    from faults.lane import GATEWAY_SECRET
    from grimbots.payments import SIGNATURE_HEADER, sign

    payment = _latest_payment(run, lead)
    if payment is None:
        return  # no charge yet: nothing to forge against
    bodies = _malformed_bodies(payment.gateway_txid, payment.amount_cents)
    for pick in picks:
        body = bodies[pick % len(bodies)]
        headers = {SIGNATURE_HEADER: sign(GATEWAY_SECRET, body), "Content-Type": "application/json"}
        try:
            status = run.client.post("/webhook/payment/sandbox", data=body, headers=headers)
            status = status.status_code
        except Exception as exc:  # noqa: BLE001 - an escaped exception is a 500 to the gateway
            run.notes.append(f"payment webhook raised {type(exc).__name__}: {exc}")
            status = 500
        paid = payment.status != "paid" and run._is_paid(payment.id)
        run.malformed.append((pick % len(bodies), status, paid))
    run.fired["gateway_malformed"] += 1
