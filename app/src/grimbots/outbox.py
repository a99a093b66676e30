"""Send a Telegram message at most once per idempotency key, and never lose one silently.

The outbound row is written (claimed) before the send. A retried job finds the row: a sent,
suppressed, failed, blocked or ambiguous row is never sent again (the caller gets that outcome
back, so nobody counts an unsent message as sent). A pending row is sent again only when that is
certainly safe:

* its claim was released: every failure that proves nothing went out (connect error, 5xx, 429,
  a limiter wait too long, a Redis or database error or a job timeout before the request)
  releases the claim, so the retry sends at once;
* its claim lapsed (the sender died), or it is held by an earlier run of the very job now
  running (a job runs again only once its earlier run failed or its worker died), and the
  in-flight mark of that attempt is absent: the mark is written in the same Redis step that
  grants the send, so its absence proves that attempt never sent a request. With the mark
  present the row becomes "ambiguous".

A send that may have reached Telegram (read timeout, reset after the request went out, a job
killed during the request) is recorded "ambiguous", counted in `outbox_ambiguous_total`, and
not repeated. A live claim of another sender raises ClaimBusy: the job retries later instead of
reporting a message it did not send. Layers 5-6 (send locks) stop a twin produced by a different
path with a different key.
"""

from __future__ import annotations

import contextlib
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import timedelta

from rq import get_current_job
from sqlalchemy import select, update
from sqlalchemy.exc import IntegrityError

from grimbots import dedup, metrics
from grimbots.db import get_db
from grimbots.leads import set_blocked
from grimbots.models import Bot, OutboundMessage, utcnow
from grimbots.redis_pool import bot_tag, state
from grimbots.telegram import (
    AmbiguousError,
    BlockedError,
    NotDueError,
    PermanentError,
    SendProgress,
    get_client,
)

log = logging.getLogger(__name__)

# A claim's owner starts no request later than CLAIM_LEASE - timeout - POST_MARGIN after
# claiming, so once the lease has lapsed the owner is certainly done or dead.
CLAIM_LEASE = timedelta(seconds=60)
POST_MARGIN = 10.0
MEDIA_METHODS = {"sendPhoto", "sendVideo", "sendDocument", "sendAnimation"}
SENT, DUPLICATE, BLOCKED, FAILED, AMBIGUOUS = "sent", "duplicate", "blocked", "failed", "ambiguous"
CANCELLED = "cancelled"
# What a settled row's status means to a caller asking to send it again.
_SETTLED = {
    "sent": DUPLICATE,
    "suppressed": DUPLICATE,
    "blocked": BLOCKED,
    "failed": FAILED,
    "ambiguous": AMBIGUOUS,
    "cancelled": CANCELLED,  # no longer due: never sent, never reported as sent
}


class ClaimBusy(Exception):
    """Another sender holds a live claim on this message: retry the job later."""


@dataclass(frozen=True)
class _Claim:
    outcome: str  # "claimed", "settled", "busy"
    attempt: int = 0
    status: str = ""


def inflight_key(bot_id: int, key: str) -> str:
    """Redis key saying "attempt N of this message may have sent a request"."""
    return f"gb:{bot_tag(bot_id)}:ob:inflight:{key}"


def _current_job_id() -> str | None:
    job = get_current_job()
    return job.id[:64] if job is not None else None


def _claim(bot_id: int, chat_id: int, key: str, method: str, payload: dict) -> _Claim:
    db = get_db()
    now = utcnow()
    job_id = _current_job_id()
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
                    claimed_by=job_id,
                    attempts=1,
                )
            )
        return _Claim("claimed", 1)
    except IntegrityError:
        pass
    with db.session() as session:
        row = session.scalar(select(OutboundMessage).where(OutboundMessage.idempotency_key == key))
        if row is None:
            return _Claim("busy")  # deleted meanwhile; the retry settles it
        if row.status != "pending":
            return _Claim("settled", row.attempts, row.status)
        attempts = row.attempts
        own_earlier_run = job_id is not None and row.claimed_by == job_id
        if (
            row.claimed_at is not None
            and row.claimed_at >= now - CLAIM_LEASE
            and not own_earlier_run
        ):
            return _Claim("busy", attempts)
        if row.claimed_at is not None and state().get(inflight_key(bot_id, key)) == str(attempts):
            # The dead owner's attempt may have reached Telegram: settle, never resend blindly.
            _settle_sender_died(session, row.id, attempts)
            return _Claim("settled", attempts, AMBIGUOUS)
        taken = session.execute(
            update(OutboundMessage)
            .where(
                OutboundMessage.id == row.id,
                OutboundMessage.status == "pending",
                OutboundMessage.attempts == attempts,
            )
            .values(claimed_at=now, claimed_by=job_id, attempts=attempts + 1)
            .execution_options(synchronize_session=False)
        )
        if taken.rowcount != 1:
            return _Claim("busy", attempts)
        return _Claim("claimed", attempts + 1)


def _settle_sender_died(session, row_id: int, attempts: int) -> None:
    session.execute(
        update(OutboundMessage)
        .where(
            OutboundMessage.id == row_id,
            OutboundMessage.status == "pending",
            OutboundMessage.attempts == attempts,
        )
        .values(status=AMBIGUOUS, error="sender died during the request")
        .execution_options(synchronize_session=False)
    )
    metrics.OUTBOX_AMBIGUOUS.labels("sender_died").inc()


def hold(bot_id: int, key: str) -> None:
    """Keep a pending row of an inactive bot for its reactivation, settling now what only the
    in-flight mark can tell (it lives an hour; a bot may stay inactive for days): a lapsed
    claim whose attempt may have sent becomes ambiguous, any other lapsed claim is released,
    so the row is sent later only if nothing can have gone out."""
    with get_db().session() as session:
        row = session.scalar(select(OutboundMessage).where(OutboundMessage.idempotency_key == key))
        if row is None or row.status != "pending" or row.claimed_at is None:
            return
        if row.claimed_at >= utcnow() - CLAIM_LEASE:
            return  # a live claim: its owner settles it
        if state().get(inflight_key(bot_id, key)) == str(row.attempts):
            _settle_sender_died(session, row.id, row.attempts)
            return
        session.execute(
            update(OutboundMessage)
            .where(
                OutboundMessage.id == row.id,
                OutboundMessage.status == "pending",
                OutboundMessage.attempts == row.attempts,
            )
            .values(claimed_at=None)
            .execution_options(synchronize_session=False)
        )


def _finish(key: str, **values) -> None:
    with get_db().session() as session:
        session.execute(
            update(OutboundMessage).where(OutboundMessage.idempotency_key == key).values(**values)
        )


def _release(key: str, attempt: int) -> None:
    """Give the claim back (nothing was sent) unless another sender took it meanwhile."""
    with get_db().session() as session:
        session.execute(
            update(OutboundMessage)
            .where(
                OutboundMessage.idempotency_key == key,
                OutboundMessage.status == "pending",
                OutboundMessage.attempts == attempt,
            )
            .values(claimed_at=None)
        )


def _interrupted(key: str, attempt: int, maybe_sent: bool, exc: BaseException) -> None:
    """Settle a send cut short by anything but a Telegram answer (best effort: a failing
    database leaves the claim to lapse, and the in-flight mark decides then)."""
    with contextlib.suppress(Exception):
        if maybe_sent:
            _finish(key, status=AMBIGUOUS, error=f"interrupted during the request: {_kind(exc)}")
            metrics.OUTBOX_AMBIGUOUS.labels("interrupted").inc()
        else:
            _release(key, attempt)


def _kind(exc: BaseException) -> str:
    return type(exc).__name__[:60]


def send(
    bot: Bot,
    chat_id: int,
    idempotency_key: str,
    method: str,
    payload: dict,
    *,
    lead_id: int | None = None,
    still_due: Callable[[], bool] | None = None,
) -> str:
    """Send once. Returns "sent", "duplicate" (sent before), "blocked", "failed", "ambiguous"
    or "cancelled"; raises TransientError (nothing was sent, the job retries) or ClaimBusy.

    `still_due` is asked once the rate slot is granted, immediately before the request: a
    message whose reason lapsed during the limiter's wait (a downsell whose lead paid) is
    settled "cancelled" instead of sent.
    """
    payload = {**payload, "chat_id": chat_id}
    claim = _claim(bot.id, chat_id, idempotency_key, method, payload)
    if claim.outcome == "settled":
        outcome = _SETTLED.get(claim.status, DUPLICATE)
        if outcome == DUPLICATE:
            metrics.DUPLICATES.labels(dedup.LAYER_DATABASE).inc()
        elif outcome == BLOCKED:
            set_blocked(bot.id, chat_id, True)  # an earlier run may have died before this
        return outcome
    if claim.outcome == "busy":
        raise ClaimBusy(idempotency_key)
    client = get_client()
    progress = SendProgress()
    deadline = (
        time.monotonic()
        + CLAIM_LEASE.total_seconds()
        - client.settings.telegram_timeout
        - POST_MARGIN
    )
    try:
        media = method in MEDIA_METHODS
        digest = dedup.content_digest(
            method,
            payload.get("text") or payload.get("caption") or "",
            payload.get("photo") or payload.get("video") or payload.get("document") or "",
        )
        if not dedup.send_lock(bot.id, chat_id, digest, idempotency_key, media):
            _finish(idempotency_key, status="suppressed", error="twin of a recent send")
            return DUPLICATE
        result = client.call(
            bot.token,
            method,
            payload,
            bot_id=bot.id,
            chat_id=chat_id,
            deadline=deadline,
            progress=progress,
            inflight=(inflight_key(bot.id, idempotency_key), str(claim.attempt)),
            still_due=still_due,
        )
    except NotDueError as exc:
        _finish(idempotency_key, status=CANCELLED, error=str(exc)[:500])
        log.info("message no longer due; not sent", extra={"key": idempotency_key})
        return CANCELLED
    except BlockedError as exc:
        _finish(idempotency_key, status="blocked", error=exc.description[:500])
        log.info("user blocked the bot", extra={"bot_id": bot.id, "lead_id": lead_id})
        set_blocked(bot.id, chat_id, True)
        return BLOCKED
    except PermanentError as exc:
        log.warning(
            "telegram refused message",
            extra={"key": idempotency_key, "lead_id": lead_id, "error": exc.description[:200]},
        )
        _finish(idempotency_key, status="failed", error=exc.description[:500])
        return FAILED
    except AmbiguousError as exc:
        _finish(idempotency_key, status=AMBIGUOUS, error=exc.description[:500])
        metrics.OUTBOX_AMBIGUOUS.labels("answer_lost").inc()
        log.warning(
            "send may have reached telegram; not repeated",
            extra={"key": idempotency_key, "lead_id": lead_id},
        )
        return AMBIGUOUS
    except BaseException as exc:
        # TransientError, a Redis error, the job's timeout, a database error: settle the claim
        # by what is known, so the retry sends at once when nothing went out.
        _interrupted(idempotency_key, claim.attempt, progress.maybe_sent, exc)
        raise
    _finish(
        idempotency_key,
        status="sent",
        sent_at=utcnow(),
        telegram_message_id=result.get("message_id"),
    )
    metrics.MESSAGES_SENT.labels(method).inc()
    return SENT
