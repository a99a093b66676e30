"""The Redis layers against duplicate processing and duplicate sends.

Layers 1-3 are taken in the webhook request by `intake.take`, on the queue Redis, in the same
Lua call that queues the update (all or nothing); layer 4 runs when a worker processes a
/start; layers 5-6 guard each send; layer 7 is the database's unique constraints (inbound
update, outbound idempotency key). Locks are never deleted after success: they expire, so a
late twin delivery is still caught. Every key carries the bot's hash tag, so one bot's keys
live in one Redis Cluster slot and a multi-key script is legal there.

Any Redis error propagates: callers fail closed (the webhook answers 503 so Telegram retries,
a worker job is retried) instead of processing without protection.
"""

from __future__ import annotations

import hashlib

from grimbots import metrics
from grimbots.redis_pool import bot_tag, state

UPDATE_LOCK_TTL = 20
MESSAGE_HASH_TTL = 3
START_LOCK_TTL = 10
LAST_START_TTL = 5
MEDIA_SEND_TTL = 15
TEXT_SEND_TTL = 10

LAYER_UPDATE, LAYER_MESSAGE, LAYER_START = "update_id", "message_hash", "start_lock"
LAYER_LAST_START, LAYER_MEDIA, LAYER_TEXT = "last_start", "media_send", "text_send"
LAYER_DATABASE = "database"


def _digest(*parts: object) -> str:
    data = "\x1f".join(str(p) for p in parts).encode()
    # A content fingerprint for lock keys, not a security boundary.
    return hashlib.blake2b(data, digest_size=10).hexdigest()


def intake_locks(bot_id: int, update_id: int, content: tuple | None, start_chat: int | None):
    """The webhook layers 1-3 as (layer, key, ttl) triples, in the order they are checked."""
    tag = bot_tag(bot_id)
    locks = [(LAYER_UPDATE, f"gb:{tag}:upd:{update_id}", UPDATE_LOCK_TTL)]
    if content is not None:
        locks.append((LAYER_MESSAGE, f"gb:{tag}:msg:{_digest(*content)}", MESSAGE_HASH_TTL))
    if start_chat is not None:
        locks.append((LAYER_START, f"gb:{tag}:start:{start_chat}", START_LOCK_TTL))
    return locks


# Layers 4-6 in one step: take the lock, or find it held by the same owner. One script, not
# SET NX then GET: a lock lapsing between the two would read as held by nobody, so a retried
# job (a welcome under 429 holds) would be taken for a twin of itself and never sent.
_TAKE_OR_OWN = """
local held = redis.call('GET', KEYS[1])
if not held then
  redis.call('SET', KEYS[1], ARGV[1], 'EX', ARGV[2])
  return 1
end
if held == ARGV[1] then return 1 end
return 0
"""


def _take_or_own(key: str, owner: str, ttl: int) -> bool:
    """True when the lock was free (now `owner`'s, for `ttl` seconds) or is `owner`'s already."""
    return bool(state().register_script(_TAKE_OR_OWN)(keys=[key], args=[owner, ttl]))


def last_start_throttle(bot_id: int, chat_id: int, update_id: int) -> bool:
    """Layer 4: True when this /start may run (no other /start of the chat in the last 5 s).

    The value is the update id, so a retried job of the same update is not throttled by itself.
    """
    key = f"gb:{bot_tag(bot_id)}:laststart:{chat_id}"
    if _take_or_own(key, str(update_id), LAST_START_TTL):
        return True
    metrics.DUPLICATES.labels(LAYER_LAST_START).inc()
    return False


def send_lock(bot_id: int, chat_id: int, payload_digest: str, idempotency_key: str, media: bool):
    """Layers 5-6: True when this send may go out.

    Keyed by chat and content, valued by the outbox idempotency key: the same logical message
    retried (same key) passes, a twin produced by another path (other key) is stopped.
    """
    kind, ttl, layer = (
        ("m", MEDIA_SEND_TTL, LAYER_MEDIA) if media else ("t", TEXT_SEND_TTL, LAYER_TEXT)
    )
    key = f"gb:{bot_tag(bot_id)}:send{kind}:{chat_id}:{payload_digest}"
    if _take_or_own(key, idempotency_key, ttl):
        return True
    metrics.DUPLICATES.labels(layer).inc()
    return False


def content_digest(*parts: object) -> str:
    return _digest(*parts)
