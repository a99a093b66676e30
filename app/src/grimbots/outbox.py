"""Send a Telegram message at most once per idempotency key.

The outbound row is written (and claimed) before the send. A retried job finds the row: sent,
failed or blocked rows are never sent again; a pending row is re-sent only when its claim has
lapsed (the sender died mid-send) or was released after a transient error. Layers 5-6 (send
locks) stop a twin produced by a different path with a different key.
"""

from __future__ import annotations

import logging
from datetime import timedelta

from sqlalchemy import or_, select, update
from sqlalchemy.exc import IntegrityError

from grimbots import dedup, metrics
from grimbots.db import get_db
from grimbots.leads import set_blocked
from grimbots.models import Bot, OutboundMessage, utcnow
from grimbots.telegram import BlockedError, PermanentError, TransientError, get_client

log = logging.getLogger(__name__)

# Longer than the slowest send with every retry, so a live sender's claim is never stolen.
CLAIM_LEASE = timedelta(seconds=180)
MEDIA_METHODS = {"sendPhoto", "sendVideo", "sendDocument", "sendAnimation"}
SENT, DUPLICATE, BLOCKED, FAILED = "sent", "duplicate", "blocked", "failed"


def _claim(bot_id: int, chat_id: int, key: str, method: str, payload: dict) -> bool:
    db = get_db()
    now = utcnow()
    try:
        with db.session() as session:
            session.add(
                OutboundMessage(
                    bot_id=bot_id,
                    chat_id=chat_id,
                    idempotency_key=key,
                    method=method,
                    payload=payload,
                    status="pending",
                    claimed_at=now,
                    attempts=1,
                )
            )
        return True
    except IntegrityError:
        pass
    with db.session() as session:
        row = session.scalar(select(OutboundMessage).where(OutboundMessage.idempotency_key == key))
        if row is None or row.status != "pending":
            return False
        taken = session.execute(
            update(OutboundMessage)
            .where(
                OutboundMessage.id == row.id,
                OutboundMessage.status == "pending",
                or_(
                    OutboundMessage.claimed_at.is_(None),
                    OutboundMessage.claimed_at < now - CLAIM_LEASE,
                ),
            )
            .values(claimed_at=now, attempts=OutboundMessage.attempts + 1)
            .execution_options(synchronize_session=False)
        )
        return taken.rowcount == 1


def _finish(key: str, **values) -> None:
    with get_db().session() as session:
        session.execute(
            update(OutboundMessage).where(OutboundMessage.idempotency_key == key).values(**values)
        )


def send(
    bot: Bot,
    chat_id: int,
    idempotency_key: str,
    method: str,
    payload: dict,
    *,
    lead_id: int | None = None,
) -> str:
    """Send once. Returns "sent", "duplicate", "blocked" or "failed"; raises TransientError
    (the job retries later) when Telegram could not be reached."""
    payload = {**payload, "chat_id": chat_id}
    if not _claim(bot.id, chat_id, idempotency_key, method, payload):
        metrics.DUPLICATES.labels(dedup.LAYER_DATABASE).inc()
        return DUPLICATE
    media = method in MEDIA_METHODS
    digest = dedup.content_digest(
        method,
        payload.get("text") or payload.get("caption") or "",
        payload.get("photo") or payload.get("video") or payload.get("document") or "",
    )
    if not dedup.send_lock(bot.id, chat_id, digest, idempotency_key, media):
        _finish(idempotency_key, status="suppressed", error="twin of a recent send")
        return DUPLICATE
    try:
        result = get_client().call(bot.token, method, payload, bot_id=bot.id, chat_id=chat_id)
    except BlockedError as exc:
        _finish(idempotency_key, status="blocked", error=exc.description[:500])
        log.info("user blocked the bot", extra={"bot_id": bot.id, "lead_id": lead_id})
        set_blocked(bot.id, chat_id, True)
        return BLOCKED
    except PermanentError as exc:
        log.warning(
            "telegram refused message",
            extra={"key": idempotency_key, "lead_id": lead_id, "error": exc.description},
        )
        _finish(idempotency_key, status="failed", error=exc.description[:500])
        return FAILED
    except TransientError:
        # Release the claim so the retried job sends at once instead of waiting for the lease.
        _finish(idempotency_key, claimed_at=None)
        raise
    _finish(
        idempotency_key,
        status="sent",
        sent_at=utcnow(),
        telegram_message_id=result.get("message_id"),
    )
    metrics.MESSAGES_SENT.labels(method).inc()
    return SENT
