"""Telegram webhook intake: O(1), Redis only, no database write and no Telegram call.

Check the bot's secret header, validate the update, then lock and queue it in one atomic step
(`intake.take`) and answer 200. Anything that cannot be done safely (Redis away, no replica
acknowledged) answers 503 so Telegram delivers again later, and that repeat is processed. A
failover of the Redis it reads or writes is tried through first, within 2.5 s (`failover.py`).
"""

from __future__ import annotations

import hmac
import json
import logging
import time
from dataclasses import dataclass

from flask import Blueprint, Response, request
from redis.exceptions import RedisError
from sqlalchemy.exc import SQLAlchemyError

from grimbots import dedup, failover, intake, metrics
from grimbots.db import get_db
from grimbots.models import Bot
from grimbots.openapi import Answer, describe
from grimbots.redis_pool import bot_tag, state
from grimbots.route_schemas import Error, Ok, TelegramUpdate

# Re-exported: the worker side (jobs.py) reads the update's kind the same way.
from grimbots.updates import UPDATE_KINDS, InvalidUpdate, is_start, parse_update, update_kind

log = logging.getLogger(__name__)
bp = Blueprint("webhook", __name__)

__all__ = ["UPDATE_KINDS", "bp", "bot_meta", "invalidate_bot_cache", "is_start", "update_kind"]

SECRET_HEADER = "X-Telegram-Bot-Api-Secret-Token"
# The answer to almost every request, built once (what jsonify(ok=True) would write).
_TAKEN = b'{"ok":true}\n'
BOT_META_TTL = 300


@dataclass(frozen=True)
class BotMeta:
    secret: str
    active: bool

    @property
    def secret_bytes(self) -> bytes:
        return self.secret.encode()


def _meta_key(bot_id: int) -> str:
    return f"gb:{bot_tag(bot_id)}:meta"


def _gen_key(bot_id: int) -> str:
    return f"gb:{bot_tag(bot_id)}:metagen"


# The meta's generation outlives any reader's lookup by far: a reader that saw a generation which
# then expired finds none, and its fill is refused all the same.
BOT_META_GEN_TTL = 86400

# Cache-aside without the race: a reader notes the generation before it reads the database and
# fills the cache only if no change was announced since (KEYS: meta, generation; ARGV: the
# generation read, '' for none, the TTL, then field/value pairs). Returns 1 when filled.
_FILL = """
if (redis.call('GET', KEYS[2]) or '') ~= ARGV[1] then return 0 end
redis.call('DEL', KEYS[1])
redis.call('HSET', KEYS[1], unpack(ARGV, 3))
redis.call('EXPIRE', KEYS[1], ARGV[2])
return 1
"""
# A change: a new generation (a fill begun before it is refused) and the cached copy dropped.
_BUMP = """
redis.call('INCR', KEYS[2])
redis.call('EXPIRE', KEYS[2], ARGV[1])
redis.call('DEL', KEYS[1])
return 1
"""

# A few seconds of in-process memory in front of the Redis copy: saves a round trip per update.
# Not shared state: a worker is at most LOCAL_META_TTL behind a secret rotation or deactivation.
LOCAL_META_TTL = 5.0
_LOCAL_META_MAX = 10_000
_local_meta: dict[int, tuple[float, BotMeta | None]] = {}
# Bumped by every local invalidation: a lookup that began before one does not keep its result.
_local_gen = 0


def bot_meta(bot_id: int) -> BotMeta | None:
    """The bot's secret and state: process memory (5 s), then Redis (300 s), then the database."""
    now = time.monotonic()
    hit = _local_meta.get(bot_id)
    if hit is not None and hit[0] > now:
        return hit[1]
    began = _local_gen
    meta = _shared_bot_meta(bot_id)
    if began == _local_gen:
        if len(_local_meta) >= _LOCAL_META_MAX:
            _local_meta.clear()
        _local_meta[bot_id] = (now + LOCAL_META_TTL, meta)
    return meta


def forget_local_bot_meta() -> None:
    """Drop this process's copies (tests that reuse bot ids across databases)."""
    global _local_gen
    _local_gen += 1
    _local_meta.clear()


def _shared_bot_meta(bot_id: int) -> BotMeta | None:
    """Redis copy, else the primary database (a standby may still hold the old secret).

    A hit is one HGETALL. A miss reads the generation first, then the row, and fills the cache
    only if the generation did not move meanwhile: a rotation or deactivation committed while
    this reader held the old row is never written back over the invalidation.
    """
    client = state()
    cached = client.hgetall(_meta_key(bot_id))
    if cached:
        if cached.get("missing"):
            return None
        return BotMeta(cached["secret"], cached["active"] == "1")
    generation = client.get(_gen_key(bot_id)) or ""
    with get_db().session() as session:
        bot = session.get(Bot, bot_id)
        meta = BotMeta(bot.webhook_secret, bool(bot.active)) if bot else None
    fill_bot_meta(bot_id, generation, meta)
    return meta


def fill_bot_meta(bot_id: int, generation: str, meta: BotMeta | None) -> bool:
    """Cache what the database said, unless the bot changed since `generation` was read."""
    if meta is None:
        mapping = ["missing", "1"]
    else:
        mapping = ["secret", meta.secret, "active", str(int(meta.active))]
    # An unknown id is cached briefly: a bot created a moment later becomes reachable soon.
    ttl = BOT_META_TTL if meta else 10
    keys = [_meta_key(bot_id), _gen_key(bot_id)]
    return bool(state().register_script(_FILL)(keys=keys, args=[generation, ttl, *mapping]))


def invalidate_bot_cache(bot_id: int) -> None:
    """Forget the cached meta after the bot's secret or active flag changed (call it after the
    change committed).

    Other processes drop their in-process copy within LOCAL_META_TTL seconds.
    """
    global _local_gen
    _local_gen += 1
    _local_meta.pop(bot_id, None)
    keys = [_meta_key(bot_id), _gen_key(bot_id)]
    state().register_script(_BUMP)(keys=keys, args=[BOT_META_GEN_TTL])


def _content(update: dict, kind: str) -> tuple | None:
    """What makes two deliveries 'the same message' for the message-hash layer."""
    if kind == "message":
        msg = update["message"]
        body = msg.get("text") or msg.get("caption") or json.dumps(msg.get("photo") or "")
        return ("m", _chat_id(msg), (msg.get("from") or {}).get("id"), body)
    if kind == "callback_query":
        cq = update["callback_query"]
        message = cq.get("message") or {}
        return ("c", (cq.get("from") or {}).get("id"), cq.get("data"), message.get("message_id"))
    return None


def _chat_id(msg: dict):
    chat = msg.get("chat")
    return chat.get("id") if isinstance(chat, dict) else None


def answer(status: int, **fields) -> tuple[int, bytes]:
    """A JSON answer as Flask's jsonify writes it (compact, insertion order, newline)."""
    return status, json.dumps(fields, separators=(",", ":")).encode() + b"\n"


def unavailable() -> tuple[int, bytes]:
    return answer(503, ok=False, error="temporarily unavailable")


def take_update(bot_id: int, given_secret: str, raw: bytes) -> tuple[int, bytes]:
    """The whole intake of one delivery: (HTTP status, JSON body). Called by the Flask view and
    by the WSGI fast path (webhook_wsgi.py), so both answer alike."""
    until = failover.deadline()
    try:
        meta = failover.retrying(lambda: bot_meta(bot_id), until)
    except RedisError:
        log.warning("redis unreachable at webhook intake", extra={"bot_id": bot_id})
        return unavailable()
    except SQLAlchemyError:
        log.warning("database unreachable looking up bot", extra={"bot_id": bot_id})
        return unavailable()
    if meta is None or not meta.active:
        return answer(404, ok=False, error="unknown bot")
    if not hmac.compare_digest(given_secret.encode("utf-8", "surrogateescape"), meta.secret_bytes):
        return answer(403, ok=False, error="bad secret token")

    try:
        update = parse_update(raw)
    except InvalidUpdate as exc:
        return answer(400, ok=False, error=str(exc))
    kind = update_kind(update)
    content = _content(update, kind)
    start_chat = None
    message = update.get("message") if kind == "message" else None
    if message is not None and is_start(message.get("text")):
        start_chat = _chat_id(message)

    locks = dedup.intake_locks(bot_id, update["update_id"], content, start_chat)
    try:
        duplicate_layer = failover.retrying(lambda: intake.take(bot_id, update, locks), until)
    except intake.NotReplicated:
        # Queued on the primary only: Telegram's repeat is answered once a replica has it.
        log.warning("queue replica did not acknowledge in time", extra={"bot_id": bot_id})
        return unavailable()
    except RedisError as exc:
        # Nothing or everything was written: the repeat is taken, or answered as a duplicate.
        log.warning(
            "queue redis unreachable at intake",
            extra={"bot_id": bot_id, "error_type": type(exc).__name__},
        )
        return unavailable()
    if duplicate_layer:
        metrics.DUPLICATES.labels(duplicate_layer).inc()
        return answer(200, ok=True, duplicate=duplicate_layer)
    metrics.MESSAGES_RECEIVED.labels(kind).inc()
    return 200, _TAKEN


@bp.post("/webhook/telegram/<int(max=2147483647):bot_id>")
@describe(
    "Take one Telegram update: lock and queue it in one step",
    description=(
        "200 means the update is queued (and on a replica where there is one); any other answer "
        "leaves nothing that would make Telegram's repeat a duplicate."
    ),
    tags=["intake"],
    security="telegramSecret",
    body=TelegramUpdate,
    responses={
        200: Answer("taken, or a duplicate of an update already taken", Ok),
        400: Answer("not a Telegram update", Error),
        403: Answer("wrong or missing secret token", Error),
        404: Answer("unknown or inactive bot", Error),
        413: Answer("body over 1 MiB", Error),
        503: Answer(
            "Redis unavailable or no replica acknowledged: Telegram repeats the update", Error
        ),
    },
)
def telegram_webhook(bot_id: int):
    """What the fast path leaves to Flask (an unusual path or body): the same intake."""
    given = request.headers.get(SECRET_HEADER, "")
    status, body = take_update(bot_id, given, request.get_data(cache=False))
    return Response(body, status=status, mimetype="application/json")
