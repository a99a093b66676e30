"""Reconcilers: scheduled jobs that finish what a fault left half done.

A job can spend its retries while Telegram is down, lose its enqueue in a Redis blip, or die
with its worker; the database still says what was meant to happen. Every INTERVAL seconds each
reconciler below runs once across all workers (the liveness thread of every worker enqueues the
ones that are due, so they run whenever any worker runs), on the `tasks` queue:

* outbox: rows left `pending` with no live claim (released, or the sender died before its
  request) are sent through the outbox itself, so every guarantee of a normal send holds; rows
  left `inflight` past their lease (the sender died during the request) become "ambiguous", not
  a second message; downsells and PIX codes no longer due (the lead paid, the charge settled)
  are cancelled; rows older than OUTBOX_MAX_AGE are given up, except deliveries. An inactive
  bot's delivery and PIX rows are held, not cancelled.
* payments: paid orders with `delivered_at` empty get their delivery job again (unless their
  delivery message is settled as ambiguous, refused or blocked, or their bot is inactive: held
  until `resume_bot` or the next pass after reactivation), so a Telegram outage of any length
  up to a day ends in exactly one delivery.
* campaigns: running campaigns that stopped moving get their next batch when none is in flight.
* intake: accepted updates whose job a dying worker popped into nowhere are queued again.
* idempotency keys: rows older than a day are deleted.
* inbound updates: rows older than the dedup window (jobs.INBOUND_DEDUP_WINDOW, 48 h) are
  deleted; Telegram reuses update ids after a week without updates.

What each pass found is a gauge (`grimbots_outbox_stale_rows`, `grimbots_paid_undelivered_orders`,
`grimbots_campaigns_stalled`), what it fixed `grimbots_reconciler_repaired_total{reconciler}`.
The grace time before a reconciler acts is GRIMBOTS_RECONCILE_GRACE (seconds, default 120): a
failing job's own retries get the first go.
"""

from __future__ import annotations

import logging
import time
from datetime import timedelta

import redis
from sqlalchemy import String, cast, delete, exists, func, literal, or_, select, update

from grimbots import metrics, outbox
from grimbots.db import get_db
from grimbots.models import (
    Bot,
    Campaign,
    IdempotencyKey,
    InboundUpdate,
    Lead,
    OutboundMessage,
    Payment,
    utcnow,
)
from grimbots.telegram import TransientError

log = logging.getLogger(__name__)

INTERVAL = 60
OUTBOX_MAX_AGE = timedelta(days=2)
IDEMPOTENCY_MAX_AGE = timedelta(days=1)
BATCH = 200
# One run never holds a worker longer than this (the job timeout is 300 s).
TIME_BUDGET = 120.0
# Delivery messages settled without certainly reaching the customer: not retried blindly.
_SETTLED_UNSENT = ("ambiguous", "failed", "blocked", "cancelled")


def _grace() -> timedelta:
    from grimbots.redis_pool import get_pools

    return timedelta(seconds=get_pools().settings.reconcile_grace)


def _repaired(name: str, repaired: int, found: int) -> dict:
    if repaired:
        metrics.RECONCILED.labels(name).inc(repaired)
        log.info("reconciler repaired", extra={"reconciler": name, "repaired": repaired})
    return {"reconciler": name, "found": found, "repaired": repaired}


def _cancel(key: str, why: str) -> None:
    with get_db().session() as session:
        session.execute(
            update(OutboundMessage)
            .where(OutboundMessage.idempotency_key == key, OutboundMessage.status == "pending")
            .values(status="cancelled", error=why)
        )


def _downsell_lapsed(session, key: str) -> bool:
    """A downsell whose lead has paid (read on the primary) is no longer due."""
    parts = key.split(":")
    if parts[0] != "downsell" or len(parts) != 3 or not parts[1].isdigit():
        return False
    lead_id = session.scalar(select(Payment.lead_id).where(Payment.id == int(parts[1])))
    if lead_id is None:
        return True
    paid = session.scalar(
        select(Payment.id).where(Payment.lead_id == lead_id, Payment.status == "paid").limit(1)
    )
    lead_paid = session.scalar(select(Lead.paid).where(Lead.id == lead_id))
    return bool(paid or lead_paid)


def _pix_lapsed(session, key: str) -> bool:
    """A PIX code whose charge is no longer pending (paid or expired) is no longer due."""
    parts = key.split(":")
    if parts[0] != "pix" or len(parts) != 2 or not parts[1].isdigit():
        return False
    status = session.scalar(select(Payment.status).where(Payment.id == int(parts[1])))
    return status != "pending"


def _guard_of(key: str) -> outbox.Guard | None:
    """A PIX code is asked again under the fence's lock: _pix_lapsed's look above is taken
    before the send, and the customer may pay in between."""
    from grimbots.payments import charge_pending

    parts = key.split(":")
    if parts[0] == "pix" and len(parts) == 2 and parts[1].isdigit():
        return charge_pending(int(parts[1]))
    return None


def _held_while_inactive(key: str) -> bool:
    """Rows that matter for money wait for their bot's reactivation instead of being cancelled:
    the access link of a paid order, and the PIX code of a charge still pending."""
    return key.startswith(("delivery:", "pix:"))


def _release_stale(row, now) -> str:
    """What to do with one stale row: "send", or why it is held or cancelled."""
    with get_db().session() as session:
        bot = session.get(Bot, row.bot_id)
        if _downsell_lapsed(session, row.idempotency_key):
            return "cancel:no longer due: the lead paid"
        if _pix_lapsed(session, row.idempotency_key):
            return "cancel:no longer due: the charge is no longer pending"
    if bot is not None and not bot.active and _held_while_inactive(row.idempotency_key):
        return "hold"
    # A paid order is owed its link however late; other messages are given up.
    too_old = row.created_at < now - OUTBOX_MAX_AGE
    if too_old and not row.idempotency_key.startswith("delivery:"):
        return "cancel:given up: pending for too long"
    if bot is None or not bot.active:
        return "cancel:bot gone or inactive"
    return "send"


def _settle_abandoned_inflight(now) -> int:
    """Rows left in flight past their lease: the sender died or lost the database during the
    request, which may have reached Telegram. Recorded ambiguous, never resent."""
    with get_db().session() as session:
        settled = session.execute(
            update(OutboundMessage)
            .where(
                OutboundMessage.status == outbox.INFLIGHT,
                OutboundMessage.claimed_at < now - outbox.CLAIM_LEASE,
            )
            .values(status=outbox.AMBIGUOUS, error="in flight with no result: sender died")
        ).rowcount
    if settled:
        metrics.OUTBOX_AMBIGUOUS.labels("sender_died").inc(settled)
        log.warning("outbox rows left in flight settled as ambiguous", extra={"rows": settled})
    return settled


def reconcile_outbox(limit: int = BATCH) -> dict:
    """Job: send outbox rows left pending without a live claim."""
    now = utcnow()
    db = get_db()
    _settle_abandoned_inflight(now)
    stale = (
        OutboundMessage.status == "pending",
        OutboundMessage.created_at < now - _grace(),
        or_(
            OutboundMessage.claimed_at.is_(None),
            OutboundMessage.claimed_at < now - outbox.CLAIM_LEASE,
        ),
    )
    with db.session() as session:
        found = session.scalar(select(func.count()).select_from(OutboundMessage).where(*stale))
        metrics.OUTBOX_STALE_ROWS.set(found)
        rows = session.execute(
            select(
                OutboundMessage.idempotency_key,
                OutboundMessage.bot_id,
                OutboundMessage.chat_id,
                OutboundMessage.method,
                OutboundMessage.payload,
                OutboundMessage.created_at,
            )
            .where(*stale)
            .order_by(OutboundMessage.id)
            .limit(limit)
        ).all()
    repaired = 0
    started = time.monotonic()
    for row in rows:
        if time.monotonic() - started > TIME_BUDGET:
            break
        action = _release_stale(row, now)
        if action == "hold":
            outbox.hold(row.bot_id, row.idempotency_key)
            continue
        if action.startswith("cancel:"):
            _cancel(row.idempotency_key, action.removeprefix("cancel:"))
            continue
        with db.session() as session:
            bot = session.get(Bot, row.bot_id)
        payload = {k: v for k, v in (row.payload or {}).items() if k != "chat_id"}
        try:
            outcome = outbox.send(
                bot,
                row.chat_id,
                row.idempotency_key,
                row.method,
                payload,
                guard=_guard_of(row.idempotency_key),
            )
        except TransientError:
            break  # Telegram is still away: the next run tries again
        except outbox.ClaimBusy:
            continue
        if outcome == outbox.SENT:
            repaired += 1
    return _repaired("outbox", repaired, found)


def _revive_held_deliveries(session, bot_id: int | None = None) -> int:
    """Delivery rows an earlier version cancelled because their bot was inactive, and whose
    claim was released (certainly unsent), become pending again: held, not lost."""
    bots = select(Bot.id).where(Bot.active.is_(True))
    if bot_id is not None:
        bots = bots.where(Bot.id == bot_id)
    return session.execute(
        update(OutboundMessage)
        .where(
            OutboundMessage.status == "cancelled",
            OutboundMessage.error == "bot gone or inactive",
            OutboundMessage.idempotency_key.like("delivery:%"),
            OutboundMessage.claimed_at.is_(None),
            OutboundMessage.bot_id.in_(bots),
        )
        .values(status="pending", error=None)
        .execution_options(synchronize_session=False)
    ).rowcount


def _undelivered_ids(session, conditions: tuple, limit: int) -> list[int]:
    """Paid, undelivered orders of active bots that match, whose message is not settled unsent."""
    delivery_key = literal("delivery:") + cast(Payment.id, String)
    settled_unsent = exists().where(
        OutboundMessage.idempotency_key == delivery_key,
        OutboundMessage.status.in_(_SETTLED_UNSENT),
    )
    active_bot = exists().where(Bot.id == Payment.bot_id, Bot.active.is_(True))
    return list(
        session.scalars(
            select(Payment.id)
            .where(*conditions, active_bot, ~settled_unsent)
            .order_by(Payment.id)
            .limit(limit)
        )
    )


def _enqueue_deliveries(ids: list[int]) -> int:
    # The job's fixed id is the guard here (the webhook's short marker only keeps concurrent
    # confirmations apart): a delivery still queued or retrying is left alone.
    from grimbots import queues
    from grimbots.payments import DELIVER_JOB, delivery_job_id

    return sum(
        1
        for payment_id in ids
        if queues.enqueue_unique(queues.TASKS, delivery_job_id(payment_id), DELIVER_JOB, payment_id)
    )


def reconcile_payments(limit: int = BATCH) -> dict:
    """Job: paid orders not delivered get their delivery job again (held while their bot is
    inactive: the gauge counts them, nothing is enqueued for them)."""
    undelivered = (
        Payment.status == "paid",
        Payment.delivered_at.is_(None),
        Payment.paid_at < utcnow() - _grace(),
    )
    with get_db().session() as session:
        _revive_held_deliveries(session)
        found = session.scalar(select(func.count()).select_from(Payment).where(*undelivered))
        metrics.PAID_UNDELIVERED.set(found)
        ids = _undelivered_ids(session, undelivered, limit)
    return _repaired("payments", _enqueue_deliveries(ids), found)


def resume_bot(bot_id: int) -> int:
    """A bot was reactivated: the deliveries held while it was inactive go out now, without
    waiting for the reconcilers; the job's fixed id and the outbox key keep each to one send.
    Returns how many delivery jobs were enqueued."""
    undelivered = (
        Payment.bot_id == bot_id,
        Payment.status == "paid",
        Payment.delivered_at.is_(None),
    )
    with get_db().session() as session:
        _revive_held_deliveries(session, bot_id)
        ids = _undelivered_ids(session, undelivered, BATCH * 10)
    return _enqueue_deliveries(ids)


def reconcile_campaigns(limit: int = BATCH) -> dict:
    """Job: running campaigns whose batch chain broke get their next batch."""
    from grimbots.campaigns import ensure_chain

    now = utcnow()
    stalled = (
        Campaign.status == "running",
        or_(Campaign.progressed_at.is_(None), Campaign.progressed_at < now - _grace()),
    )
    with get_db().session() as session:
        ids = list(
            session.scalars(select(Campaign.id).where(*stalled).order_by(Campaign.id).limit(limit))
        )
    metrics.CAMPAIGNS_STALLED.set(len(ids))
    repaired = sum(1 for campaign_id in ids if ensure_chain(campaign_id))
    return _repaired("campaigns", repaired, len(ids))


def purge_idempotency_keys() -> dict:
    """Job: forget committed-transaction markers older than a day."""
    with get_db().session() as session:
        gone = session.execute(
            delete(IdempotencyKey).where(IdempotencyKey.created_at < utcnow() - IDEMPOTENCY_MAX_AGE)
        ).rowcount
    return _repaired("idempotency_keys", 0, gone)


def purge_inbound_updates(limit: int = 5000) -> dict:
    """Job: forget inbound updates older than the dedup window, at most `limit` per pass.

    Telegram redelivers an update for at most 24 h; a row kept longer only makes a later
    update that reuses the id look like a duplicate.
    """
    from grimbots.jobs import INBOUND_DEDUP_WINDOW

    with get_db().session() as session:
        old = (
            select(InboundUpdate.id)
            .where(InboundUpdate.received_at < utcnow() - INBOUND_DEDUP_WINDOW)
            .order_by(InboundUpdate.received_at)
            .limit(limit)
        )
        ids = list(session.scalars(old))
        if ids:
            session.execute(delete(InboundUpdate).where(InboundUpdate.id.in_(ids)))
    return _repaired("inbound_updates", 0, len(ids))


def requeue_lost_updates() -> dict:
    """Job: intake jobs that a dying worker took with it go back on their queue
    (intake.requeue_lost: queued, yet in no queue, intermediate list or started registry)."""
    from grimbots import intake

    result = intake.requeue_lost()
    return _repaired("intake", result["requeued"], result["checked"])


# Every reconciler, as zero-argument callables (the scheduler enqueues them by name; tools and
# the fault-injection suite may call them directly).
RECONCILERS = (
    requeue_lost_updates,
    reconcile_outbox,
    reconcile_payments,
    reconcile_campaigns,
    purge_idempotency_keys,
    purge_inbound_updates,
)


def schedule_due(conn: redis.Redis) -> list[str]:
    """Enqueue every reconciler whose interval has passed (once across all workers)."""
    from grimbots import queues

    enqueued = []
    for fn in RECONCILERS:
        name = fn.__name__
        if not conn.set(f"gb:reconcile:{name}:due", "1", nx=True, ex=INTERVAL):
            continue
        if queues.enqueue_unique(queues.TASKS, f"reconcile-{name}", f"{__name__}.{name}"):
            enqueued.append(name)
    return enqueued
