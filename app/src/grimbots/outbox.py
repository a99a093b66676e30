"""Send a Telegram message at most once per idempotency key, and never lose one silently.

The outbound row is written (claimed) before the send. A retried job finds the row: a sent,
suppressed, failed, blocked or ambiguous row is never sent again (the caller gets that outcome
back, so nobody counts an unsent message as sent).

The durable proof that a request may have gone out is the row itself: right before each HTTP
request (after the limiter's grant) one UPDATE moves it from `pending` to `inflight`, and
commits, only if it still carries this run's token (`attempts`, raised by every claim). So:

* a newer run that took the claim over (the job run again while this one was stalled in the
  limiter or cut off from Redis) has raised the token, and the stale run's UPDATE finds nothing:
  it raises ClaimLost and sends nothing (fencing; at most one live run reaches the request);
* every failure that proves nothing went out (connect error, 5xx, 429, a limiter wait too long,
  a Redis or database error or a job timeout before the request) puts the row back to `pending`
  and releases the claim, so the retry sends at once;
* a `pending` row whose claim lapsed (the sender died) or is held by an earlier run of the job
  now running is taken over and sent: nothing of that attempt went out;
* an `inflight` row with no result (the sender died, or lost the database, during the request)
  is never resent: the takeover, or the outbox reconciler once the claim lapsed, records it
  "ambiguous".

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
from sqlalchemy.orm import Session

from grimbots import dedup, metrics
from grimbots.db import get_db
from grimbots.leads import set_blocked
from grimbots.models import Bot, OutboundMessage, utcnow
from grimbots.telegram import (
    AmbiguousError,
    BlockedError,
    NotDueError,
    PermanentError,
    SendProgress,
    TelegramClient,
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
PENDING, INFLIGHT = "pending", "inflight"  # unsettled: claimable, or a request may be out
# What a settled row's status means to a caller asking to send it again.
_SETTLED = {
    "sent": DUPLICATE,
    "suppressed": DUPLICATE,
    "blocked": BLOCKED,
    "failed": FAILED,
    "ambiguous": AMBIGUOUS,
    "cancelled": CANCELLED,  # no longer due: never sent, never reported as sent
}


# Asked inside the fence's transaction (see _fence): True while the message is still due.
Guard = Callable[[Session], bool]


class ClaimBusy(Exception):
    """Another sender holds a live claim on this message: retry the job later."""


class ClaimLost(ClaimBusy):
    """A newer run took this message's claim over before this run's request: nothing sent."""


@dataclass(frozen=True)
class _Claim:
    outcome: str  # "claimed", "settled", "busy"
    attempt: int = 0
    status: str = ""


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
        if row.status not in (PENDING, INFLIGHT):
            return _Claim("settled", row.attempts, row.status)
        attempts = row.attempts
        own_earlier_run = job_id is not None and row.claimed_by == job_id
        if (
            row.claimed_at is not None
            and row.claimed_at >= now - CLAIM_LEASE
            and not own_earlier_run
        ):
            return _Claim("busy", attempts)
        unchanged = (
            OutboundMessage.id == row.id,
            OutboundMessage.status == row.status,
            OutboundMessage.attempts == attempts,
        )
        if row.status == INFLIGHT:
            # The earlier attempt's request may have reached Telegram: never resend blindly.
            _settle_sender_died(session, row.id, attempts)
            return _Claim("settled", attempts, AMBIGUOUS)
        taken = session.execute(
            update(OutboundMessage)
            .where(*unchanged)
            .values(claimed_at=now, claimed_by=job_id, attempts=attempts + 1)
            .execution_options(synchronize_session=False)
        )
        if taken.rowcount != 1:
            return _Claim("busy", attempts)
        return _Claim("claimed", attempts + 1)


def _settle_sender_died(session, row_id: int, attempts: int) -> None:
    """A row left in flight by a run that is gone: its request may have reached Telegram, so it
    becomes ambiguous (never resent), unless another run changed it meanwhile."""
    session.execute(
        update(OutboundMessage)
        .where(
            OutboundMessage.id == row_id,
            OutboundMessage.status == INFLIGHT,
            OutboundMessage.attempts == attempts,
        )
        .values(status=AMBIGUOUS, error="sender died during the request")
        .execution_options(synchronize_session=False)
    )
    metrics.OUTBOX_AMBIGUOUS.labels("sender_died").inc()


def hold(bot_id: int, key: str) -> None:
    """Keep an unsettled row of an inactive bot for its reactivation, settling now a lapsed
    claim: one whose request may have gone out (in flight) becomes ambiguous, any other is
    released, so the row is sent later only if nothing can have gone out."""
    with get_db().session() as session:
        row = session.scalar(select(OutboundMessage).where(OutboundMessage.idempotency_key == key))
        if row is None or row.status not in (PENDING, INFLIGHT) or row.claimed_at is None:
            return
        if row.claimed_at >= utcnow() - CLAIM_LEASE:
            return  # a live claim: its owner settles it
        if row.status == INFLIGHT:
            _settle_sender_died(session, row.id, row.attempts)
            return
        session.execute(
            update(OutboundMessage)
            .where(
                OutboundMessage.id == row.id,
                OutboundMessage.status == PENDING,
                OutboundMessage.attempts == row.attempts,
            )
            .values(claimed_at=None)
            .execution_options(synchronize_session=False)
        )


def _finish(key: str, attempt: int, **values) -> None:
    """Record this run's outcome, unless a newer run holds the row (its token is higher)."""
    with get_db().session() as session:
        session.execute(
            update(OutboundMessage)
            .where(OutboundMessage.idempotency_key == key, OutboundMessage.attempts == attempt)
            .values(**values)
        )


def _fence(key: str, attempt: int, guard: Guard | None = None) -> None:
    """Commit "a request of this run may go out" before it does, only if the row still carries
    this run's token (else ClaimLost: a newer run owns the message) and `guard` still holds
    (else NotDueError, and the mark is rolled back: nothing goes out)."""
    with get_db().session() as session:
        marked = session.execute(
            update(OutboundMessage)
            .where(
                OutboundMessage.idempotency_key == key,
                OutboundMessage.attempts == attempt,
                OutboundMessage.status.in_((PENDING, INFLIGHT)),
            )
            .values(status=INFLIGHT)
        )
        if marked.rowcount != 1:
            raise ClaimLost(key)
        # After the UPDATE: SQLite then holds the write lock, so the guard reads the newest
        # state; on PostgreSQL the guard locks what it reads. Either way no writer can change
        # it before this transaction commits the decision to send.
        if guard is not None and not guard(session):
            raise NotDueError("no longer due when its request was about to go out")


def _release(key: str, attempt: int) -> None:
    """Give the claim back (nothing was sent) unless another sender took it meanwhile."""
    with get_db().session() as session:
        session.execute(
            update(OutboundMessage)
            .where(
                OutboundMessage.idempotency_key == key,
                OutboundMessage.status.in_((PENDING, INFLIGHT)),
                OutboundMessage.attempts == attempt,
            )
            .values(status=PENDING, claimed_at=None)
        )


def _unsent(key: str, attempt: int) -> None:
    """An answer proved this run's request was not delivered: the row is pending again (best
    effort: a row left in flight is only taken for ambiguous later, never resent)."""
    with contextlib.suppress(Exception), get_db().session() as session:
        session.execute(
            update(OutboundMessage)
            .where(
                OutboundMessage.idempotency_key == key,
                OutboundMessage.status == INFLIGHT,
                OutboundMessage.attempts == attempt,
            )
            .values(status=PENDING)
        )


def _interrupted(key: str, attempt: int, maybe_sent: bool, exc: BaseException) -> None:
    """Settle a send cut short by anything but a Telegram answer (best effort: a failing
    database leaves the row as it was, and an in-flight row is never resent)."""
    if isinstance(exc, ClaimLost):
        return  # the row is the newer run's
    with contextlib.suppress(Exception):
        if maybe_sent:
            why = f"interrupted during the request: {_kind(exc)}"
            _finish(key, attempt, status=AMBIGUOUS, error=why)
            metrics.OUTBOX_AMBIGUOUS.labels("interrupted").inc()
        else:
            _release(key, attempt)


def _kind(exc: BaseException) -> str:
    return type(exc).__name__[:60]


def _settled_outcome(bot_id: int, chat_id: int, status: str) -> str:
    """What a retry gets back for a row that was already settled."""
    outcome = _SETTLED.get(status, DUPLICATE)
    if outcome == DUPLICATE:
        metrics.DUPLICATES.labels(dedup.LAYER_DATABASE).inc()
    elif outcome == BLOCKED:
        set_blocked(bot_id, chat_id, True)  # an earlier run may have died before this
    return outcome


def _request(
    client: TelegramClient,
    bot: Bot,
    chat_id: int,
    key: str,
    attempt: int,
    method: str,
    payload: dict,
    deadline: float,
    progress: SendProgress,
    still_due: Callable[[], bool] | None,
    guard: Guard | None,
) -> dict | None:
    """Take the send lock and make the request; None when a twin was sent recently (settled
    "suppressed" here)."""
    media = method in MEDIA_METHODS
    digest = dedup.content_digest(
        method,
        payload.get("text") or payload.get("caption") or "",
        payload.get("photo") or payload.get("video") or payload.get("document") or "",
        *twin_scope(key),
    )
    if not dedup.send_lock(bot.id, chat_id, digest, key, media):
        _finish(key, attempt, status="suppressed", error="twin of a recent send")
        return None
    return client.call(
        bot.token,
        method,
        payload,
        bot_id=bot.id,
        chat_id=chat_id,
        deadline=deadline,
        progress=progress,
        still_due=still_due,
        fence=lambda: _fence(key, attempt, guard),
        unsent=lambda: _unsent(key, attempt),
    )


def _settle_refusal(
    exc: Exception, bot_id: int, chat_id: int, key: str, attempt: int, lead_id: int | None
) -> str:
    """Record a send that ended with a known answer other than success; its outcome."""
    if isinstance(exc, NotDueError):
        _finish(key, attempt, status=CANCELLED, error=str(exc)[:500])
        log.info("message no longer due; not sent", extra={"key": key})
        return CANCELLED
    if isinstance(exc, BlockedError):
        _finish(key, attempt, status="blocked", error=exc.description[:500])
        log.info("user blocked the bot", extra={"bot_id": bot_id, "lead_id": lead_id})
        set_blocked(bot_id, chat_id, True)
        return BLOCKED
    if isinstance(exc, PermanentError):
        log.warning(
            "telegram refused message",
            extra={"key": key, "lead_id": lead_id, "error": exc.description[:200]},
        )
        _finish(key, attempt, status="failed", error=exc.description[:500])
        return FAILED
    assert isinstance(exc, AmbiguousError)
    _finish(key, attempt, status=AMBIGUOUS, error=exc.description[:500])
    metrics.OUTBOX_AMBIGUOUS.labels("answer_lost").inc()
    log.warning(
        "send may have reached telegram; not repeated",
        extra={"key": key, "lead_id": lead_id},
    )
    return AMBIGUOUS


def twin_scope(idempotency_key: str) -> tuple[str, ...]:
    """What narrows the send lock (layers 5-6) beyond chat and content: a welcome's /start
    generation, so welcomes of two /starts the intake and layer 4 took as distinct are never
    twins, even when a long 429 hold or an outage makes them go out within the lock's seconds
    (whoever sends: the job or the outbox reconciler). Other messages: nothing (their lock
    keys stay as they were)."""
    kind, _, rest = idempotency_key.partition(":")
    if kind != "welcome":
        return ()
    parts = rest.split(":")  # bot, lead, generation[, media | text]
    return (parts[2],) if len(parts) >= 3 else ()


def send(
    bot: Bot,
    chat_id: int,
    idempotency_key: str,
    method: str,
    payload: dict,
    *,
    lead_id: int | None = None,
    still_due: Callable[[], bool] | None = None,
    guard: Guard | None = None,
) -> str:
    """Send once. Returns "sent", "duplicate" (sent before), "blocked", "failed", "ambiguous"
    or "cancelled"; raises TransientError (nothing was sent, the job retries) or ClaimBusy.

    `still_due` is asked once the rate slot is granted, immediately before the request: a
    message whose reason lapsed during the limiter's wait (a downsell whose lead paid) is
    settled "cancelled" instead of sent. `guard` is the same question asked inside the
    transaction that commits the decision to send (locking what it reads): for a condition
    another writer may flip at any moment, such as a charge being paid, so that the check and
    the send cannot interleave with that writer.
    """
    payload = {**payload, "chat_id": chat_id}
    claim = _claim(bot.id, chat_id, idempotency_key, method, payload)
    if claim.outcome == "settled":
        return _settled_outcome(bot.id, chat_id, claim.status)
    if claim.outcome == "busy":
        raise ClaimBusy(idempotency_key)
    attempt = claim.attempt
    client = get_client()
    progress = SendProgress()
    deadline = (
        time.monotonic()
        + CLAIM_LEASE.total_seconds()
        - client.settings.telegram_timeout
        - POST_MARGIN
    )
    try:
        result = _request(
            client,
            bot,
            chat_id,
            idempotency_key,
            attempt,
            method,
            payload,
            deadline,
            progress,
            still_due,
            guard,
        )
    except (NotDueError, BlockedError, PermanentError, AmbiguousError) as exc:
        return _settle_refusal(exc, bot.id, chat_id, idempotency_key, attempt, lead_id)
    except BaseException as exc:
        # TransientError, a Redis error, the job's timeout, a database error: settle the claim
        # by what is known, so the retry sends at once when nothing went out.
        _interrupted(idempotency_key, attempt, progress.maybe_sent, exc)
        raise
    if result is None:
        return DUPLICATE
    _finish(
        idempotency_key,
        attempt,
        status="sent",
        sent_at=utcnow(),
        telegram_message_id=result.get("message_id"),
    )
    metrics.MESSAGES_SENT.labels(method).inc()
    return SENT
