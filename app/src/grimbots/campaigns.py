"""Remarketing campaigns: a broadcast to one bot's leads, in resumable batches on `marathon`.

Campaigns run for minutes to hours, so the work is cut into batches by lead id: each batch reads
the leads after the campaign's cursor, sends through the outbox, then moves the cursor and the
counters in one transaction and enqueues the next batch. A crashed or retried batch resumes from
the cursor, and the outbox's per-lead idempotency key (`campaign:<id>:<lead>`) makes sure nobody
receives the message twice. The audience is the leads of the campaign's own bot, of its own
seller (the lesson: an unscoped query once sent one seller's broadcast to another's bots), that
existed when the campaign started.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import UTC, datetime

from sqlalchemy import exists, func, select, update
from sqlalchemy.orm import Session

from grimbots.db import get_db
from grimbots.models import BlockedUser, Bot, Campaign, Lead

log = logging.getLogger(__name__)

QUEUE = "marathon"
JOB = "grimbots.campaigns.run_campaign_batch"
BATCH_SIZE = 200
# Telegram's caption limit: longer text goes as its own message after the media.
MAX_CAPTION = 1024
# Within a batch, re-read the stop flag this often so a stop takes effect in seconds.
STOP_CHECK_EVERY = 50
MEDIA_METHODS = {"photo": ("sendPhoto", "photo"), "video": ("sendVideo", "video")}


@dataclass(frozen=True)
class OutgoingMessage:
    key: str
    method: str
    payload: dict


def build_messages(campaign: Campaign, lead_id: int, chat_id: int) -> list[OutgoingMessage]:
    """The one or two Telegram calls that deliver the campaign to one lead."""
    base_key = f"campaign:{campaign.id}:{lead_id}"
    markup = None
    if campaign.buttons:
        markup = {
            "inline_keyboard": [[{"text": b["text"], "url": b["url"]}] for b in campaign.buttons]
        }
    text = campaign.text or ""
    if not campaign.media_type:
        payload: dict = {"chat_id": chat_id, "text": text}
        if markup:
            payload["reply_markup"] = markup
        return [OutgoingMessage(base_key, "sendMessage", payload)]
    method, field = MEDIA_METHODS[campaign.media_type]
    media: dict = {"chat_id": chat_id, field: campaign.media_url}
    if len(text) <= MAX_CAPTION:
        if text:
            media["caption"] = text
        if markup:
            media["reply_markup"] = markup
        return [OutgoingMessage(base_key, method, media)]
    follow: dict = {"chat_id": chat_id, "text": text}
    if markup:
        follow["reply_markup"] = markup
    return [
        OutgoingMessage(base_key, method, media),
        OutgoingMessage(f"{base_key}:text", "sendMessage", follow),
    ]


def _audience(campaign: Campaign):
    """Where-clauses selecting the campaign's leads: its bot, its seller, its filter, its start."""
    clauses = [
        Lead.bot_id == campaign.bot_id,
        Bot.id == Lead.bot_id,
        Bot.seller_id == campaign.seller_id,
    ]
    if campaign.started_at is not None:
        clauses.append(Lead.created_at <= campaign.started_at)
    if campaign.audience == "paid":
        clauses.append(Lead.paid.is_(True))
    elif campaign.audience == "unpaid":
        clauses.append(Lead.paid.is_(False))
    return clauses


def audience_size(session: Session, campaign: Campaign) -> int:
    return session.execute(
        select(func.count())
        .select_from(Lead)
        .join(Bot, Bot.id == Lead.bot_id)
        .where(*_audience(campaign))
    ).scalar_one()


def start_campaign(session: Session, campaign: Campaign) -> bool:
    """Mark a draft or stopped campaign running (atomically); False if it was not startable.

    A stopped campaign resumes from its cursor with its original audience and counters.
    """
    now = datetime.now(UTC)
    first_start = campaign.started_at is None
    values: dict = {
        "status": "running",
        "stop_requested": False,
        "finished_at": None,
        "progressed_at": now,
    }
    if first_start:
        values["started_at"] = now
    flipped = session.execute(
        update(Campaign)
        .where(Campaign.id == campaign.id, Campaign.status.in_(("draft", "stopped")))
        .values(**values)
    ).rowcount
    if flipped != 1:
        return False
    session.refresh(campaign)
    if first_start:
        campaign.total = audience_size(session, campaign)
        session.flush()
    return True


def batch_job_id(campaign_id: int, cursor: int) -> str:
    """One job id per (campaign, cursor): asking for a batch again never stacks a second copy."""
    return f"campaign-{campaign_id}-{cursor}"


def enqueue_batch(
    campaign_id: int, batch_size: int = BATCH_SIZE, cursor: int | None = None
) -> bool:
    """Enqueue the campaign's batch at its cursor unless that batch is already in flight."""
    from grimbots import queues

    if cursor is None:
        with get_db().session() as session:
            cursor = session.scalar(select(Campaign.cursor).where(Campaign.id == campaign_id))
        if cursor is None:
            return False
    return queues.enqueue_unique(
        QUEUE, batch_job_id(campaign_id, cursor), JOB, campaign_id, batch_size
    )


def ensure_chain(campaign_id: int) -> bool:
    """Give a running campaign its next batch when none is in flight (a broken chain, a stop
    request nobody would see); True when a batch was enqueued."""
    with get_db().session() as session:
        row = session.execute(
            select(Campaign.status, Campaign.cursor).where(Campaign.id == campaign_id)
        ).one_or_none()
    if row is None or row.status != "running":
        return False
    return enqueue_batch(campaign_id, cursor=row.cursor)


def _is_blocked_clause():
    return exists().where(
        BlockedUser.bot_id == Lead.bot_id, BlockedUser.telegram_user_id == Lead.telegram_user_id
    )


def _stop_requested(campaign_id: int) -> bool:
    with get_db().session() as session:
        return bool(
            session.execute(
                select(Campaign.stop_requested).where(Campaign.id == campaign_id)
            ).scalar_one_or_none()
        )


def _finish(campaign_id: int, status: str) -> None:
    def fn(session: Session) -> None:
        session.execute(
            update(Campaign)
            .where(Campaign.id == campaign_id, Campaign.status == "running")
            .values(status=status, finished_at=datetime.now(UTC))
        )

    get_db().transaction(fn)


@dataclass
class _BatchCounts:
    sent: int = 0
    failed: int = 0
    skipped: int = 0
    stopped: bool = False


def _load_batch(campaign_id: int, batch_size: int):
    """The campaign, its bot and the next leads after its cursor, detached from the session;
    or the outcome dict when the campaign cannot run (not running, stop requested, bot gone)."""
    with get_db().session() as session:
        campaign = session.get(Campaign, campaign_id)
        if campaign is None or campaign.status != "running":
            return {"campaign_id": campaign_id, "outcome": "not running"}
        if campaign.stop_requested:
            _finish(campaign_id, "stopped")
            return {"campaign_id": campaign_id, "outcome": "stopped"}
        bot = session.get(Bot, campaign.bot_id)
        if bot is None or bot.seller_id != campaign.seller_id or not bot.active:
            log.warning("campaign %s stopped: its bot is gone or inactive", campaign_id)
            _finish(campaign_id, "stopped")
            return {"campaign_id": campaign_id, "outcome": "bot unavailable"}
        session.expunge(bot)
        leads = session.execute(
            select(Lead.id, Lead.chat_id, Lead.blocked, _is_blocked_clause().label("listed"))
            .join(Bot, Bot.id == Lead.bot_id)
            .where(*_audience(campaign), Lead.id > campaign.cursor)
            .order_by(Lead.id)
            .limit(batch_size)
        ).all()
        session.expunge(campaign)
    return campaign, bot, leads


def _send_to_lead(campaign: Campaign, bot: Bot, lead) -> str:
    """Deliver the campaign to one lead: "sent", or the first outbox outcome that was not."""
    from grimbots import outbox

    for message in build_messages(campaign, lead.id, lead.chat_id):
        result = outbox.send(
            bot,
            lead.chat_id,
            message.key,
            message.method,
            message.payload,
            lead_id=lead.id,
        )
        # "duplicate": an earlier, interrupted run of this batch already sent it.
        if result not in ("sent", "duplicate"):
            return result
    return "sent"


def _send_batch(campaign: Campaign, bot: Bot, leads: list) -> tuple[_BatchCounts, int]:
    """Send to the batch's leads, re-reading the stop flag every STOP_CHECK_EVERY leads;
    the counts and the cursor after the last lead handled."""
    counts = _BatchCounts()
    cursor = campaign.cursor
    for index, lead in enumerate(leads):
        if index and index % STOP_CHECK_EVERY == 0 and _stop_requested(campaign.id):
            counts.stopped = True
            break
        if lead.blocked or lead.listed:
            counts.skipped += 1
        else:
            outcome = _send_to_lead(campaign, bot, lead)
            if outcome == "sent":
                counts.sent += 1
            elif outcome == "blocked":
                counts.skipped += 1
            else:
                counts.failed += 1
        cursor = lead.id
    return counts, cursor


def _commit_batch(
    campaign_id: int, start_cursor: int, cursor: int, counts: _BatchCounts, done: bool
) -> bool:
    """Move the cursor and counters (and the status when the chain ends) in one transaction;
    False when another run moved the cursor first."""

    def commit(session: Session) -> bool:
        moved = session.execute(
            update(Campaign)
            .where(Campaign.id == campaign_id, Campaign.cursor == start_cursor)
            .values(
                cursor=cursor,
                progressed_at=datetime.now(UTC),
                sent=Campaign.sent + counts.sent,
                failed=Campaign.failed + counts.failed,
                skipped_blocked=Campaign.skipped_blocked + counts.skipped,
            )
        ).rowcount
        if moved != 1:
            return False
        if done or counts.stopped:
            session.execute(
                update(Campaign)
                .where(Campaign.id == campaign_id, Campaign.status == "running")
                .values(status="finished" if done else "stopped", finished_at=datetime.now(UTC))
            )
        return True

    # A commit whose answer was lost is not run twice: db.transaction finds its own stored
    # result, so this chain continues instead of calling itself "superseded".
    return get_db().transaction(commit)


def run_campaign_batch(campaign_id: int, batch_size: int = BATCH_SIZE) -> dict:
    """One batch of a campaign (an RQ job on `marathon`); enqueues the next batch itself.

    Returns what happened, for logs and tests.
    """
    loaded = _load_batch(campaign_id, batch_size)
    if isinstance(loaded, dict):
        return loaded
    campaign, bot, leads = loaded
    start_cursor = campaign.cursor
    # Sends happen outside any transaction: the outbox writes its own rows, and a long-open
    # transaction would hold SQLite's writer lock for the whole batch.
    counts, cursor = _send_batch(campaign, bot, leads)
    done = not counts.stopped and len(leads) < batch_size
    if not _commit_batch(campaign_id, start_cursor, cursor, counts, done):
        # Another run of this campaign moved the cursor first (a restart while a batch was
        # queued): it owns the progress, this chain ends here.
        return {"campaign_id": campaign_id, "outcome": "superseded"}
    result = {
        "campaign_id": campaign_id,
        "outcome": "finished" if done else "stopped" if counts.stopped else "continuing",
        "sent": counts.sent,
        "failed": counts.failed,
        "skipped_blocked": counts.skipped,
        "cursor": cursor,
    }
    if not done and not counts.stopped:
        enqueue_batch(campaign_id, batch_size, cursor=cursor)
    log.info("campaign batch", extra=result)
    return result
