"""Reconcilers: scheduled jobs that finish what a fault left half done.

A job can spend its retries while Telegram is down, lose its enqueue in a Redis blip, or die
with its worker; the database still says what was meant to happen. Every INTERVAL seconds each
reconciler below runs once across all workers (the liveness thread of every worker enqueues the
ones that are due, so they run whenever any worker runs), on the `tasks` queue:

* outbox: rows left `pending` with no live claim (released, or the sender died) are sent through
  the outbox itself, so every guarantee of a normal send holds (a dead sender's attempt that may
  have gone out becomes "ambiguous", not a second message); downsells no longer due (the lead
  paid) are cancelled; rows older than OUTBOX_MAX_AGE are given up.
* payments: paid orders with `delivered_at` empty get their delivery job again (unless their
  delivery message is settled as ambiguous, refused or blocked), so a Telegram outage of any
  length up to a day ends in exactly one delivery.
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


def reconcile_outbox(limit: int = BATCH) -> dict:
    """Job: send outbox rows left pending without a live claim."""
    now = utcnow()
    db = get_db()
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
        if row.created_at < now - OUTBOX_MAX_AGE:
            _cancel(row.idempotency_key, "given up: pending for too long")
            continue
        with db.session() as session:
            lapsed = _downsell_lapsed(session, row.idempotency_key)
            bot = session.get(Bot, row.bot_id)
        if lapsed:
            _cancel(row.idempotency_key, "no longer due: the lead paid")
            continue
        if bot is None or not bot.active:
            _cancel(row.idempotency_key, "bot gone or inactive")
            continue
        payload = {k: v for k, v in (row.payload or {}).items() if k != "chat_id"}
        try:
            outcome = outbox.send(bot, row.chat_id, row.idempotency_key, row.method, payload)
        except TransientError:
            break  # Telegram is still away: the next run tries again
        except outbox.ClaimBusy:
            continue
        if outcome == outbox.SENT:
            repaired += 1
    return _repaired("outbox", repaired, found)


def reconcile_payments(limit: int = BATCH) -> dict:
    """Job: paid orders not delivered get their delivery job again."""
    from grimbots import queues
    from grimbots.payments import DELIVER_JOB, delivery_job_id

    now = utcnow()
    delivery_key = literal("delivery:") + cast(Payment.id, String)
    settled_unsent = exists().where(
        OutboundMessage.idempotency_key == delivery_key,
        OutboundMessage.status.in_(_SETTLED_UNSENT),
    )
    undelivered = (
        Payment.status == "paid",
        Payment.delivered_at.is_(None),
        Payment.paid_at < now - _grace(),
    )
    with get_db().session() as session:
        found = session.scalar(select(func.count()).select_from(Payment).where(*undelivered))
        metrics.PAID_UNDELIVERED.set(found)
        ids = list(
            session.scalars(
                select(Payment.id)
                .where(*undelivered, ~settled_unsent)
                .order_by(Payment.id)
                .limit(limit)
            )
        )
    # The job's fixed id is the guard here (the webhook's short marker only keeps concurrent
    # confirmations apart): a delivery still queued or retrying is left alone.
    repaired = sum(
        1
        for payment_id in ids
        if queues.enqueue_unique(queues.TASKS, delivery_job_id(payment_id), DELIVER_JOB, payment_id)
    )
    return _repaired("payments", repaired, found)


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
