"""Telegram Bot API client: one pooled HTTP session per process, limits enforced across processes.

Limits (Telegram's, shared by every process and host through Redis): about 30 messages/s per
bot and 1 per second per chat. A 429 answer's retry_after is honoured and also pushed into the
shared limiter, so every other worker sending for that bot backs off too. Timeouts and 5xx are
retried with exponential backoff; 403 means the user blocked the bot.
"""

from __future__ import annotations

import logging
import random
import threading
import time
from typing import Any

import requests
from requests.adapters import HTTPAdapter

from grimbots import metrics
from grimbots.redis_pool import bot_tag, state
from grimbots.settings import Settings

log = logging.getLogger(__name__)

MAX_RETRY_AFTER = 60.0
MAX_RATE_WAIT = 30.0


class TelegramError(Exception):
    def __init__(self, status: int, description: str, retry_after: float | None = None):
        super().__init__(f"{status}: {description}")
        self.status = status
        self.description = description
        self.retry_after = retry_after


class BlockedError(TelegramError):
    """403: the user blocked the bot (or the bot was kicked)."""


class PermanentError(TelegramError):
    """A 4xx other than 403/429: sending again would fail the same way."""


class TransientError(TelegramError):
    """Timeouts, 5xx or 429 that outlasted the retries."""


# GCRA over several keys at once: every key must allow the send, and only then are all of
# them advanced. Returns 0 (send now) or the milliseconds to wait. Redis' own clock is used,
# so hosts with skewed clocks still share one schedule.
_GCRA = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local wait = 0
local tats = {}
for i, key in ipairs(KEYS) do
  local interval = tonumber(ARGV[2 * i - 1])
  local burst = tonumber(ARGV[2 * i])
  local tat = tonumber(redis.call('GET', key) or now)
  if tat < now then tat = now end
  local allow_at = tat - interval * (burst - 1)
  if allow_at > now and allow_at - now > wait then wait = allow_at - now end
  tats[i] = tat + interval
end
if wait > 0 then return wait end
for i, key in ipairs(KEYS) do
  redis.call('SET', key, tats[i], 'PX', math.ceil(tats[i] - now) + 1000)
end
return 0
"""

_PENALIZE = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local until_ms = now + tonumber(ARGV[1])
local tat = tonumber(redis.call('GET', KEYS[1]) or 0)
if until_ms > tat then redis.call('SET', KEYS[1], until_ms, 'PX', tonumber(ARGV[1]) + 1000) end
return 0
"""


class RateLimiter:
    """Shared per-bot and per-chat send schedule (GCRA) in Redis."""

    def __init__(self, bot_rate: int, chat_rate: int):
        self.bot_interval = 1000.0 / bot_rate
        self.bot_burst = bot_rate
        self.chat_interval = 1000.0 / chat_rate
        self._gcra = state().register_script(_GCRA)
        self._penalize = state().register_script(_PENALIZE)

    def _keys(self, bot_id: int, chat_id: int | None) -> tuple[list[str], list[float]]:
        tag = bot_tag(bot_id)
        keys = [f"gb:{tag}:rl:bot"]
        args: list[float] = [self.bot_interval, self.bot_burst]
        if chat_id is not None:
            keys.append(f"gb:{tag}:rl:chat:{chat_id}")
            args += [self.chat_interval, 1]
        return keys, args

    def acquire(self, bot_id: int, chat_id: int | None, max_wait: float = MAX_RATE_WAIT) -> None:
        """Block until this send fits both limits; raise TransientError past max_wait."""
        keys, args = self._keys(bot_id, chat_id)
        deadline = time.monotonic() + max_wait
        while True:
            wait_ms = int(self._gcra(keys=keys, args=args))
            if wait_ms <= 0:
                return
            if time.monotonic() + wait_ms / 1000 > deadline:
                raise TransientError(429, "local rate limit wait exceeded", wait_ms / 1000)
            time.sleep(wait_ms / 1000)

    def penalize(self, bot_id: int, seconds: float) -> None:
        """Telegram said 429: hold every sender of this bot back for retry_after."""
        keys, _ = self._keys(bot_id, None)
        self._penalize(keys=keys, args=[int(seconds * 1000)])


class TelegramClient:
    def __init__(self, settings: Settings):
        self.settings = settings
        self.base = settings.telegram_api_base
        self.session = requests.Session()
        adapter = HTTPAdapter(pool_connections=4, pool_maxsize=32)
        self.session.mount("http://", adapter)
        self.session.mount("https://", adapter)
        self._limiter: RateLimiter | None = None

    @property
    def limiter(self) -> RateLimiter:
        if self._limiter is None:
            self._limiter = RateLimiter(
                self.settings.telegram_bot_rate, self.settings.telegram_chat_rate
            )
        return self._limiter

    def call(
        self,
        token: str,
        method: str,
        payload: dict[str, Any],
        *,
        bot_id: int | None = None,
        chat_id: int | None = None,
        rate_limited: bool = True,
    ) -> dict:
        """Call one Bot API method; returns Telegram's `result`."""
        url = f"{self.base}/bot{token}/{method}"
        attempts = self.settings.telegram_max_retries + 1
        last: TelegramError | None = None
        for attempt in range(attempts):
            if rate_limited and bot_id is not None:
                self.limiter.acquire(bot_id, chat_id)
            try:
                resp = self.session.post(url, json=payload, timeout=self.settings.telegram_timeout)
            except requests.Timeout:
                metrics.TELEGRAM_ERRORS.labels("timeout").inc()
                last = TransientError(0, "timeout")
                self._backoff(attempt)
                continue
            except requests.ConnectionError:
                metrics.TELEGRAM_ERRORS.labels("connection").inc()
                last = TransientError(0, "connection error")
                self._backoff(attempt)
                continue
            body = _json(resp)
            if resp.status_code == 200 and body.get("ok"):
                return body.get("result") or {}
            description = str(body.get("description") or resp.reason or "error")
            if resp.status_code == 429:
                metrics.TELEGRAM_ERRORS.labels("rate_limited").inc()
                retry_after = float((body.get("parameters") or {}).get("retry_after") or 1)
                retry_after = min(retry_after, MAX_RETRY_AFTER)
                if bot_id is not None:
                    self.limiter.penalize(bot_id, retry_after)
                last = TransientError(429, description, retry_after)
                if attempt + 1 < attempts:
                    time.sleep(retry_after)
                continue
            if resp.status_code == 403:
                metrics.TELEGRAM_ERRORS.labels("blocked").inc()
                raise BlockedError(403, description)
            if resp.status_code >= 500:
                metrics.TELEGRAM_ERRORS.labels("server_error").inc()
                last = TransientError(resp.status_code, description)
                self._backoff(attempt)
                continue
            metrics.TELEGRAM_ERRORS.labels("bad_request").inc()
            raise PermanentError(resp.status_code, description)
        assert last is not None
        raise TransientError(last.status, f"gave up after {attempts} attempts: {last.description}")

    def _backoff(self, attempt: int) -> None:
        if attempt + 1 < self.settings.telegram_max_retries + 1:
            time.sleep(min(8.0, 0.25 * 2**attempt) * (0.5 + random.random() / 2))


def _json(resp: requests.Response) -> dict:
    try:
        body = resp.json()
    except ValueError:
        return {}
    return body if isinstance(body, dict) else {}


_client: TelegramClient | None = None
_client_lock = threading.Lock()


def get_client(settings: Settings | None = None) -> TelegramClient:
    """The process's one Telegram client (one pooled HTTP session)."""
    global _client
    if _client is None:
        with _client_lock:
            if _client is None:
                if settings is None:
                    from grimbots.redis_pool import get_pools

                    settings = get_pools().settings  # the settings this process started with
                _client = TelegramClient(settings)
    return _client


def reset_client() -> None:
    global _client
    with _client_lock:
        if _client is not None:
            _client.session.close()
        _client = None


def set_webhooks(settings: Settings, bot_id: int | None = None) -> list[dict]:
    """Point each active bot's webhook at this platform, with its secret token."""
    from sqlalchemy import select

    from grimbots.db import get_db
    from grimbots.models import Bot

    client = get_client(settings)
    with get_db(settings).read_session() as session:
        query = select(Bot).where(Bot.active.is_(True))
        if bot_id is not None:
            query = query.where(Bot.id == bot_id)
        bots = list(session.scalars(query))
    results = []
    for bot in bots:
        payload = {
            "url": f"{settings.public_url}/webhook/telegram/{bot.id}",
            "secret_token": bot.webhook_secret,
            "allowed_updates": ["message", "callback_query", "my_chat_member"],
            "max_connections": 40,
        }
        try:
            client.call(bot.token, "setWebhook", payload, rate_limited=False)
            results.append({"bot_id": bot.id, "username": bot.username, "ok": True})
        except TelegramError as exc:
            results.append(
                {"bot_id": bot.id, "username": bot.username, "ok": False, "error": exc.description}
            )
    return results
