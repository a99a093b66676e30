"""Shared per-bot and per-chat send schedule in Redis (every process and host).

Telegram counts a send when the request reaches it, which is some time after the limiter grants
the slot (the outbox commits its row in flight, the host schedules the thread, the network
carries the request). So a slot is not stamped at the grant: it is taken *in flight* at the
grant and stamped with the time the request's answer came back (`release`), which is no earlier
than Telegram's receipt. The next slot of a full window opens one window after that stamp, so
two of a chat's sends, or 31 of a bot's, are never within one second at Telegram however long
the delay between grant and receipt: no margin is needed on the window.

A slot whose outcome is unknown (a read timeout, the worker killed or cut off from Redis) is
never stamped: it stays in flight until `inflight_ms` after its grant, a bound longer than any
request can last (connect, write and read each bounded by the client's timeout).
"""

from __future__ import annotations

import time
import uuid

from grimbots.redis_pool import bot_tag, state

# The longest a sender waits in-process for the shared schedule; past it the send fails as
# certainly-unsent (the job retries later) instead of holding a worker.
MAX_RATE_WAIT = 30.0
RATE_WINDOW_MS = 1000

# Sliding-window log over several keys at once: every key must allow the send, and only then is
# it recorded in all of them, so no window ever holds more than `limit` sends. A log entry's
# score is the latest time its request can have reached Telegram: grant + in-flight bound while
# in flight, the answer's time once released; an entry frees `window` ms after its score.
# KEYS[1] is the bot's hold (set after a 429), then the log keys; ARGV: the number of logs, a
# (limit, window ms) pair per log, the slot's id, the in-flight bound in ms. Returns 0 (granted)
# or the whole milliseconds to wait: Redis turns Lua numbers into integers, so a fractional wait
# would become 0 and let a send through uncounted.
_ACQUIRE = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + tonumber(t[2]) / 1000
local nlogs = tonumber(ARGV[1])
local inflight = tonumber(ARGV[2 * nlogs + 3])
local wait = 0
local hold = tonumber(redis.call('GET', KEYS[1]) or 0)
if hold > now then wait = hold - now end
for i = 1, nlogs do
  local key = KEYS[i + 1]
  local limit = tonumber(ARGV[2 * i])
  local window = tonumber(ARGV[2 * i + 1])
  redis.call('ZREMRANGEBYSCORE', key, '-inf', now - window)
  if redis.call('ZCARD', key) >= limit then
    local first = tonumber(redis.call('ZRANGE', key, -limit, -limit, 'WITHSCORES')[2])
    -- Still in flight: it is answered now at the earliest, so it frees a window from now.
    if first > now then first = now end
    local w = first + window - now
    if w > wait then wait = w end
  end
end
if wait > 0 then return math.max(1, math.ceil(wait)) end
local member = ARGV[2 * nlogs + 2]
for i = 1, nlogs do
  redis.call('ZADD', KEYS[i + 1], now + inflight, member)
  redis.call('PEXPIRE', KEYS[i + 1], math.ceil(inflight + tonumber(ARGV[2 * i + 1])) + 1000)
end
return 0
"""

# The slot's request is answered (ARGV[last] = 1: stamp it with now) or was never made (0: free
# it). Same KEYS and leading ARGV as _ACQUIRE. A key's TTL is only ever lengthened: other slots
# in it may still be in flight.
_RELEASE = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + tonumber(t[2]) / 1000
local nlogs = tonumber(ARGV[1])
local member = ARGV[2 * nlogs + 2]
local sent = ARGV[2 * nlogs + 3] == '1'
for i = 1, nlogs do
  local key = KEYS[i + 1]
  if sent then
    redis.call('ZADD', key, now, member)
    local ttl = math.ceil(tonumber(ARGV[2 * i + 1])) + 1000
    if redis.call('PTTL', key) < ttl then redis.call('PEXPIRE', key, ttl) end
  else
    redis.call('ZREM', key, member)
  end
end
return 0
"""

_PENALIZE = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + tonumber(t[2]) / 1000
local until_ms = math.ceil(now + tonumber(ARGV[1]))
local hold = tonumber(redis.call('GET', KEYS[1]) or 0)
if until_ms > hold then
  redis.call('SET', KEYS[1], until_ms, 'PX', math.ceil(tonumber(ARGV[1])) + 1000)
end
return 0
"""


class RateWaitExceeded(Exception):
    """The schedule has no slot within the caller's wait; nothing was taken."""

    def __init__(self, wait: float):
        super().__init__(f"rate limit wait {wait:.3f} s exceeded")
        self.wait = wait


class Slot:
    """A granted send: its log keys and id, for `RateLimiter.release`."""

    __slots__ = ("args", "keys")

    def __init__(self, keys: list[str], args: list):
        self.keys = keys
        self.args = args


class RateLimiter:
    """Shared per-bot and per-chat send schedule in Redis (every process and host)."""

    def __init__(self, bot_rate: int, chat_rate: int, inflight: float = 30.0):
        self.bot_limit = bot_rate
        self.chat_limit = chat_rate
        self.bot_window = RATE_WINDOW_MS
        self.chat_window = RATE_WINDOW_MS
        self.inflight_ms = max(1.0, inflight * 1000)
        self._acquire = state().register_script(_ACQUIRE)
        self._release = state().register_script(_RELEASE)
        self._penalize = state().register_script(_PENALIZE)

    @staticmethod
    def hold_key(bot_id: int) -> str:
        return f"gb:{bot_tag(bot_id)}:rl:hold"

    def _keys(self, bot_id: int, chat_id: int | None) -> tuple[list[str], list]:
        tag = bot_tag(bot_id)
        keys = [self.hold_key(bot_id), f"gb:{tag}:rl:bot"]
        limits: list = [self.bot_limit, self.bot_window]
        if chat_id is not None:
            keys.append(f"gb:{tag}:rl:chat:{chat_id}")
            limits += [self.chat_limit, self.chat_window]
        return keys, limits

    def acquire(self, bot_id: int, chat_id: int | None, max_wait: float = MAX_RATE_WAIT) -> Slot:
        """Block until this send fits every limit and take its slot, in flight; raise
        RateWaitExceeded past max_wait. Release the slot once the request is answered."""
        keys, limits = self._keys(bot_id, chat_id)
        args: list = [len(limits) // 2, *limits, uuid.uuid4().hex]
        deadline = time.monotonic() + max(0.0, max_wait)
        while True:
            wait_ms = int(self._acquire(keys=keys, args=[*args, self.inflight_ms]))
            if wait_ms <= 0:
                return Slot(keys, args)
            if time.monotonic() + wait_ms / 1000 > deadline:
                raise RateWaitExceeded(wait_ms / 1000)
            time.sleep(wait_ms / 1000)

    def release(self, slot: Slot, sent: bool) -> None:
        """The request was answered (`sent`: stamp the slot with now, Telegram had it by then)
        or never made (free the slot). Never called when the outcome is unknown."""
        self._release(keys=slot.keys, args=[*slot.args, 1 if sent else 0])

    def penalize(self, bot_id: int, seconds: float) -> None:
        """Telegram said 429: hold every sender of this bot back for the whole retry_after."""
        self._penalize(keys=[self.hold_key(bot_id)], args=[max(0.0, seconds) * 1000])
