"""RQ job entry points. All database writes and Telegram calls happen here, in workers."""

from __future__ import annotations

import logging
import time
from datetime import timedelta

from sqlalchemy import select, update
from sqlalchemy.exc import IntegrityError

from grimbots import activity, dedup, funnel, metrics
from grimbots.db import get_db
from grimbots.leads import set_blocked, upsert_lead
from grimbots.models import Bot, Click, InboundUpdate, utcnow
from grimbots.telegram import TelegramError, get_client
from grimbots.webhook import is_start, update_kind

log = logging.getLogger(__name__)

# Re-exported so producers can enqueue "grimbots.jobs.<name>" without importing the funnel.
deliver_access = funnel.deliver_access
run_downsell = funnel.run_downsell
create_charge = funnel.create_charge


# Telegram redelivers an update for at most 24 h, and restarts update_id at random after a
# week without updates: an inbound row older than this no longer makes the same id a duplicate.
INBOUND_DEDUP_WINDOW = timedelta(hours=48)


def _claim_update(bot_id: int, update_id: int, kind: str) -> int | None:
    """Layer 7: one row per (bot, update_id). None when the update was fully processed within
    the window; else the update's funnel generation (stable across retries of the same
    update), for a new update and for one whose earlier attempt died half-way (steps are
    idempotent).
    """
    db = get_db()
    now = utcnow()
    generation = funnel.generation_of(now)
    try:
        with db.session() as session:
            session.add(
                InboundUpdate(
                    bot_id=bot_id,
                    update_id=update_id,
                    kind=kind,
                    received_at=now,
                    generation=generation,
                )
            )
        return generation
    except IntegrityError:
        pass
    this_update = (InboundUpdate.bot_id == bot_id, InboundUpdate.update_id == update_id)
    with db.session() as session:
        # A row from before the window is an older update that had this id: take it over.
        # One UPDATE decides, so two workers cannot both take it over.
        reused = session.execute(
            update(InboundUpdate)
            .where(*this_update, InboundUpdate.received_at < now - INBOUND_DEDUP_WINDOW)
            .values(kind=kind, received_at=now, processed_at=None, generation=generation)
        ).rowcount
    if reused:
        return generation
    with db.session() as session:
        row = session.execute(
            select(InboundUpdate.generation, InboundUpdate.processed_at).where(*this_update)
        ).first()
    if row is None:  # pruned since the insert conflicted: claim it afresh
        return _claim_update(bot_id, update_id, kind)
    stored, processed = row
    if processed is not None:
        metrics.DUPLICATES.labels(dedup.LAYER_DATABASE).inc()
        return None
    # A row claimed by an older version: its first attempt used the update_id.
    return stored if stored is not None else update_id


def _mark_processed(bot_id: int, update_id: int) -> None:
    with get_db().session() as session:
        session.execute(
            update(InboundUpdate)
            .where(InboundUpdate.bot_id == bot_id, InboundUpdate.update_id == update_id)
            .values(processed_at=utcnow())
        )


def process_update(bot_id: int, update: dict) -> str:
    """Job (webhook queue): one Telegram update, end to end."""
    started = time.perf_counter()
    update_id = int(update["update_id"])
    kind = update_kind(update)
    with get_db().session() as session:
        bot = session.get(Bot, bot_id)
    if bot is None:
        return "unknown bot"
    generation = _claim_update(bot_id, update_id, kind)
    if generation is None:
        return "duplicate"
    user = _sender(update.get(kind))
    if user is not None:
        activity.seen(user)
    outcome = _dispatch(bot, kind, update.get(kind), update_id, generation)
    _mark_processed(bot_id, update_id)
    metrics.UPDATE_PROCESSING.observe(time.perf_counter() - started)
    return outcome


def _sender(body) -> int | None:
    """The Telegram user an update comes from, if it names one."""
    sender = body.get("from") if isinstance(body, dict) else None
    user = sender.get("id") if isinstance(sender, dict) else None
    return user if isinstance(user, int) and not isinstance(user, bool) else None


def _dispatch(bot: Bot, kind: str, body, update_id: int, generation: int) -> str:
    if not isinstance(body, dict):
        return "ignored"
    if kind == "message":
        return _message(bot, body, update_id, generation)
    if kind == "callback_query":
        return _callback(bot, body, tap_id(update_id, generation))
    if kind == "my_chat_member":
        return _member_changed(bot, body)
    return "acknowledged"


def _member_changed(bot: Bot, body: dict) -> str:
    """The bot's membership changed. Only the private chat with the user says whether that
    user blocked the bot; a group, supergroup or channel the user adds it to or removes it
    from says nothing about the lead (acknowledged, flag untouched)."""
    user = body.get("from") or {}
    chat = body.get("chat") or {}
    status = (body.get("new_chat_member") or {}).get("status")
    if chat.get("type") != "private" or "id" not in user or chat.get("id") != user["id"]:
        return "acknowledged"
    if status in ("kicked", "member"):
        set_blocked(bot.id, int(user["id"]), status == "kicked")
        return f"chat member {status}"
    return "acknowledged"


def _message(bot: Bot, msg: dict, update_id: int, generation: int) -> str:
    chat, user = msg.get("chat") or {}, msg.get("from") or {}
    if chat.get("type", "private") != "private" or "id" not in user or "id" not in chat:
        return "ignored"
    lead = upsert_lead(bot.id, user, int(chat["id"]))
    text = msg.get("text")
    if is_start(text):
        if not dedup.last_start_throttle(
            bot.id, lead.chat_id, update_id
        ) and not funnel.welcome_claimed(bot, lead, generation):
            return "throttled"
        payload = text.split(maxsplit=1)[1] if len(text.split(maxsplit=1)) > 1 else ""
        funnel.start(bot, lead, payload, generation)
        return "start"
    return "message"


def tap_id(update_id: int, generation: int) -> str:
    """What keys a tap's bump proposal and charge: the update's id and its receipt stamp.

    Not the update_id alone: Telegram restarts update_id at random after a week without
    updates, so a new tap could carry the id of an old one and get its bump deduplicated and its
    old charge back. The receipt stamp is stored with the inbound row, so a retried job of the
    same tap gets the same id; the update_id keeps two taps received in one millisecond apart.
    """
    return f"{update_id}-{generation}"


def _callback(bot: Bot, cq: dict, tap: str) -> str:
    user = cq.get("from") or {}
    message = cq.get("message") or {}
    chat_id = (message.get("chat") or {}).get("id") or user.get("id")
    if "id" not in user or chat_id is None:
        return "ignored"
    try:
        # Stops the button's spinner; not a message, so neither rate-limited nor in the outbox.
        get_client().call(
            bot.token,
            "answerCallbackQuery",
            {"callback_query_id": cq.get("id")},
            bot_id=bot.id,
            rate_limited=False,
        )
    except TelegramError as exc:
        log.info("answerCallbackQuery failed", extra={"error": exc.description})
    lead = upsert_lead(bot.id, user, int(chat_id))
    parts = str(cq.get("data") or "").split(":")
    try:
        if parts[0] == "buy" and len(parts) == 2:
            funnel.offer_tapped(bot, lead, int(parts[1]), tap)
        elif parts[0] == "bump" and len(parts) == 3:
            funnel.bump_answered(bot, lead, int(parts[1]), parts[2] == "1", tap)
        elif parts[0] == "ds" and len(parts) == 3:
            funnel.downsell_tapped(bot, lead, int(parts[1]), int(parts[2]))
        else:
            return "unknown callback"
    except ValueError:
        return "bad callback"
    return f"callback {parts[0]}"


def record_click(data: dict) -> None:
    """Job (tracking queue): store the click of a /go redirect (its token is unique)."""
    from grimbots.tracking import clean_click

    # Cleaned again: jobs queued before /go cleaned its input may carry NUL.
    data = data | clean_click(data)
    try:
        with get_db().session() as session:
            session.add(Click(**data))
    except IntegrityError:
        pass  # the same click recorded by a retried job
