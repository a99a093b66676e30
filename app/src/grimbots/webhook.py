"""Telegram webhook intake: O(1), Redis only, no database write and no Telegram call.

Check the bot's secret header, validate the update, take the dedup locks, enqueue, answer 200.
Anything that cannot be done safely (Redis away) answers 503 so Telegram delivers again later.
"""

from __future__ import annotations

import contextlib
import hmac
import json
import logging
import time
from dataclasses import dataclass

from flask import Blueprint, jsonify, request
from redis.exceptions import RedisError
from sqlalchemy.exc import SQLAlchemyError

from grimbots import dedup, metrics
from grimbots.db import get_db
from grimbots.errors import ApiError
from grimbots.models import Bot
from grimbots.queues import DEFAULT_RETRY, WEBHOOK, get_queue
from grimbots.redis_pool import bot_tag, state

log = logging.getLogger(__name__)
bp = Blueprint("webhook", __name__)

SECRET_HEADER = "X-Telegram-Bot-Api-Secret-Token"
BOT_META_TTL = 300
UPDATE_KINDS = (
    "message",
    "edited_message",
    "callback_query",
    "my_chat_member",
    "channel_post",
    "edited_channel_post",
    "chat_member",
    "chat_join_request",
    "inline_query",
    "pre_checkout_query",
)


@dataclass(frozen=True)
class BotMeta:
    secret: str
    active: bool


def _meta_key(bot_id: int) -> str:
    return f"gb:{bot_tag(bot_id)}:meta"


# A few seconds of in-process memory in front of the Redis copy: saves a round trip per update.
# Not shared state: a worker is at most LOCAL_META_TTL behind a secret rotation or deactivation.
LOCAL_META_TTL = 5.0
_LOCAL_META_MAX = 10_000
_local_meta: dict[int, tuple[float, BotMeta | None]] = {}


def bot_meta(bot_id: int) -> BotMeta | None:
    """The bot's secret and state: process memory (5 s), then Redis (300 s), then the database."""
    now = time.monotonic()
    hit = _local_meta.get(bot_id)
    if hit is not None and hit[0] > now:
        return hit[1]
    meta = _shared_bot_meta(bot_id)
    if len(_local_meta) >= _LOCAL_META_MAX:
        _local_meta.clear()
    _local_meta[bot_id] = (now + LOCAL_META_TTL, meta)
    return meta


def forget_local_bot_meta() -> None:
    """Drop this process's copies (tests that reuse bot ids across databases)."""
    _local_meta.clear()


def _shared_bot_meta(bot_id: int) -> BotMeta | None:
    client = state()
    cached = client.hgetall(_meta_key(bot_id))
    if cached:
        if cached.get("missing"):
            return None
        return BotMeta(cached["secret"], cached["active"] == "1")
    with get_db().read_session() as session:
        bot = session.get(Bot, bot_id)
        meta = BotMeta(bot.webhook_secret, bool(bot.active)) if bot else None
    if meta is None:
        mapping = {"missing": "1"}
    else:
        mapping = {"secret": meta.secret, "active": str(int(meta.active))}
    pipe = client.pipeline(transaction=False)
    pipe.hset(_meta_key(bot_id), mapping=mapping)
    # An unknown id is cached briefly: a bot created a moment later becomes reachable soon.
    pipe.expire(_meta_key(bot_id), BOT_META_TTL if meta else 10)
    pipe.execute()
    return meta


def invalidate_bot_cache(bot_id: int) -> None:
    """Forget the cached meta after the bot's secret or active flag changed.

    Other processes drop their in-process copy within LOCAL_META_TTL seconds.
    """
    _local_meta.pop(bot_id, None)
    state().delete(_meta_key(bot_id))


def update_kind(update: dict) -> str:
    for kind in UPDATE_KINDS:
        if kind in update:
            return kind
    # Types newer than this code are acknowledged, never an error.
    return next((k for k in update if k != "update_id"), "unknown")


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


def is_start(text: object) -> bool:
    if not isinstance(text, str):
        return False
    command = text.split(maxsplit=1)[0] if text.strip() else ""
    return command == "/start" or command.startswith("/start@")


def _parse_update() -> dict:
    raw = request.get_data(cache=False)
    try:
        update = json.loads(raw)
    except (ValueError, UnicodeDecodeError) as exc:
        raise ApiError(400, "body is not valid JSON") from exc
    if not isinstance(update, dict):
        raise ApiError(400, "an update is a JSON object")
    update_id = update.get("update_id")
    if not isinstance(update_id, int) or isinstance(update_id, bool) or update_id < 0:
        raise ApiError(400, "update_id must be a non-negative integer")
    return update


@bp.post("/webhook/telegram/<int:bot_id>")
def telegram_webhook(bot_id: int):
    try:
        meta = bot_meta(bot_id)
    except RedisError:
        log.warning("redis unreachable at webhook intake", extra={"bot_id": bot_id})
        return jsonify(ok=False, error="temporarily unavailable"), 503
    except SQLAlchemyError:
        log.warning("database unreachable looking up bot", extra={"bot_id": bot_id})
        return jsonify(ok=False, error="temporarily unavailable"), 503
    if meta is None or not meta.active:
        raise ApiError(404, "unknown bot")
    given = request.headers.get(SECRET_HEADER, "")
    if not hmac.compare_digest(given.encode(), meta.secret.encode()):
        raise ApiError(403, "bad secret token")

    update = _parse_update()
    kind = update_kind(update)
    content = _content(update, kind) if isinstance(update.get(kind), dict) else None
    start_chat = None
    message = update.get("message") if kind == "message" else None
    if isinstance(message, dict) and is_start(message.get("text")):
        start_chat = _chat_id(message)

    locks = dedup.intake_locks(bot_id, update["update_id"], content, start_chat)
    try:
        duplicate_layer = dedup.acquire_intake(locks)
    except RedisError:
        log.warning("redis unreachable at dedup", extra={"bot_id": bot_id})
        return jsonify(ok=False, error="temporarily unavailable"), 503
    if duplicate_layer:
        return jsonify(ok=True, duplicate=duplicate_layer)

    try:
        queue = get_queue(WEBHOOK)
        # One round trip: RQ's queue registration and the job travel in one pipeline.
        with queue.connection.pipeline() as pipe:
            queue.enqueue(
                "grimbots.jobs.process_update",
                bot_id,
                update,
                result_ttl=0,
                failure_ttl=7 * 86400,
                retry=DEFAULT_RETRY,
                pipeline=pipe,
            )
            pipe.execute()
    except RedisError:
        log.warning("enqueue failed, releasing dedup locks", extra={"bot_id": bot_id})
        # If even that fails the locks expire on their own; Telegram's backoff outlasts them.
        with contextlib.suppress(RedisError):
            dedup.release(locks)
        return jsonify(ok=False, error="temporarily unavailable"), 503
    metrics.MESSAGES_RECEIVED.labels(kind).inc()
    return jsonify(ok=True)
