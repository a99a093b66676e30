"""Telegram Bot API client: one pooled HTTP session per process, limits enforced across processes.

Limits (Telegram's, shared by every process and host through Redis): at most 30 messages per
bot and 1 per chat in any one-second window. A 429 answer's retry_after (uncapped) is pushed
into the shared limiter, so every sender of that bot waits it out. Only failures that prove the
request never reached Telegram (connect errors, 5xx, 429) are retried; a read timeout or a reset
after the request went out is ambiguous and raised as such, never resent here. 403 means the
user blocked the bot.
"""

from __future__ import annotations

import contextlib
import json
import logging
import random
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import requests
from requests.adapters import HTTPAdapter
from urllib3.exceptions import ConnectTimeoutError, NewConnectionError

from grimbots import metrics
from grimbots.redis_pool import bot_tag, state
from grimbots.settings import Settings

log = logging.getLogger(__name__)

# The longest a sender waits in-process for the shared schedule; past it the send fails as
# certainly-unsent (the job retries later) instead of holding a worker.
MAX_RATE_WAIT = 30.0
# Window of the per-bot and per-chat limits, with a margin for the delay between the limiter
# granting a send and Telegram receiving it (the outbox commits its row in flight after the
# grant; a busy host adds its scheduling delay). One send that arrives later than the margin
# puts two of a chat's sends, or 31 of a bot's, in one second at Telegram: 50 ms on the bot's
# window was not enough on this 2-core machine running the fault suite's 14 lanes (31 sends in
# 1.0 s, seed 20261130 indexes 14 and 189). 300 ms costs a campaign its peak: 30 sends per
# 1.3 s, about 23 per second.
RATE_WINDOW_MS = 1000
RATE_MARGIN_MS = 300
CHAT_MARGIN_MS = 300


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
    """The message certainly did not reach Telegram (connect error, 5xx, 429, a limiter wait
    too long): sending it again later is safe."""


class AmbiguousError(TelegramError):
    """The request went out and no answer came back (read timeout, connection reset): Telegram
    may have delivered it, so it must not be sent again blindly."""


class NotDueError(Exception):
    """The caller's `still_due` said the message is no longer wanted; nothing was sent."""


@dataclass
class SendProgress:
    """What the caller needs to know when a send is interrupted by anything (a job timeout, a
    Redis error): True once a request may have left this process without a certain answer."""

    maybe_sent: bool = False


# Sliding-window log over several keys at once: every key must allow the send, and only then is
# it recorded in all of them, so no window of RATE_WINDOW_MS ever holds more than `limit` sends.
# KEYS[1] is the bot's hold (set after a 429), then the log keys; ARGV: the number of logs, a
# (limit, window ms) pair per log, the send's id. Returns 0 (send now) or the whole milliseconds
# to wait: Redis turns Lua numbers into integers, so a fractional wait would become 0 and let a
# send through uncounted.
_WINDOW = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + tonumber(t[2]) / 1000
local nlogs = tonumber(ARGV[1])
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
    local w = first + window - now
    if w > wait then wait = w end
  end
end
if wait > 0 then return math.max(1, math.ceil(wait)) end
local member = ARGV[2 * nlogs + 2]
for i = 1, nlogs do
  redis.call('ZADD', KEYS[i + 1], now, member)
  redis.call('PEXPIRE', KEYS[i + 1], math.ceil(tonumber(ARGV[2 * i + 1])) + 1000)
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


class RateLimiter:
    """Shared per-bot and per-chat send schedule in Redis (every process and host)."""

    def __init__(self, bot_rate: int, chat_rate: int):
        self.bot_limit = bot_rate
        self.chat_limit = chat_rate
        self.bot_window = RATE_WINDOW_MS + RATE_MARGIN_MS
        self.chat_window = RATE_WINDOW_MS + CHAT_MARGIN_MS
        self._window = state().register_script(_WINDOW)
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

    def acquire(
        self,
        bot_id: int,
        chat_id: int | None,
        max_wait: float = MAX_RATE_WAIT,
    ) -> None:
        """Block until this send fits every limit; raise TransientError past max_wait."""
        keys, limits = self._keys(bot_id, chat_id)
        args: list = [len(limits) // 2, *limits, uuid.uuid4().hex]
        deadline = time.monotonic() + max(0.0, max_wait)
        while True:
            wait_ms = int(self._window(keys=keys, args=args))
            if wait_ms <= 0:
                return
            if time.monotonic() + wait_ms / 1000 > deadline:
                raise TransientError(429, "local rate limit wait exceeded", wait_ms / 1000)
            time.sleep(wait_ms / 1000)

    def penalize(self, bot_id: int, seconds: float) -> None:
        """Telegram said 429: hold every sender of this bot back for the whole retry_after."""
        self._penalize(keys=[self.hold_key(bot_id)], args=[max(0.0, seconds) * 1000])


def _certainly_unsent(exc: requests.RequestException) -> bool:
    """True when the request never reached Telegram: the connection was never established."""
    if isinstance(exc, requests.ConnectTimeout):
        return True
    if isinstance(exc, requests.Timeout):
        return False  # a read timeout: the request was written, the answer did not come
    reason = exc.args[0] if exc.args else None
    reason = getattr(reason, "reason", reason)  # urllib3's MaxRetryError wraps the cause
    return isinstance(reason, NewConnectionError | ConnectTimeoutError)


def _cause(exc: requests.RequestException) -> str:
    """The failure's classes (`SSLError`, `ProxyError/ProtocolError`), without its message."""
    reason = exc.args[0] if exc.args else None
    reason = getattr(reason, "reason", reason)
    if isinstance(reason, BaseException):
        return f"{type(exc).__name__}/{type(reason).__name__}"
    return type(exc).__name__


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
        deadline: float | None = None,
        progress: SendProgress | None = None,
        still_due: Callable[[], bool] | None = None,
        fence: Callable[[], None] | None = None,
        unsent: Callable[[], None] | None = None,
    ) -> dict:
        """Call one Bot API method; returns Telegram's `result`.

        Retried here only when the request certainly did not reach Telegram (connect errors,
        5xx, 429); a read timeout or a reset after the request went out raises AmbiguousError.
        No request starts after `deadline` (time.monotonic()): past it, TransientError.
        `still_due` is asked after the rate slot is granted, right before each request (the
        wait may last 30 s): False raises NotDueError, with nothing sent. `fence` runs right
        before each request (the outbox records it in flight, or raises to stop it); `unsent`
        after an answer that proves the request was not delivered.
        """
        url = f"{self.base}/bot{token}/{method}"
        attempts = self.settings.telegram_max_retries + 1
        progress = progress if progress is not None else SendProgress()
        last: TelegramError | None = None
        for attempt in range(attempts):
            if attempt:
                self._backoff(attempt - 1, last, deadline)
            self._clear_to_send(bot_id, chat_id, rate_limited, deadline, still_due, fence)
            progress.maybe_sent = True
            resp = self._post(url, payload, progress, unsent)
            if isinstance(resp, TransientError):
                last = resp
                continue
            body = _json(resp)
            if resp.status_code == 200 and body.get("ok"):
                return body.get("result") or {}
            last = self._refused(resp, body, bot_id, progress, unsent)
            if last.status == 429 and (bot_id is None or not rate_limited):
                if last.retry_after > MAX_RATE_WAIT:
                    break
                time.sleep(last.retry_after)
            # Otherwise, after a 429 the shared limiter holds the next attempt back.
        assert last is not None
        raise TransientError(
            last.status,
            f"gave up after {attempts} attempts: {last.description}",
            last.retry_after,
        )

    def _clear_to_send(
        self,
        bot_id: int | None,
        chat_id: int | None,
        rate_limited: bool,
        deadline: float | None,
        still_due: Callable[[], bool] | None,
        fence: Callable[[], None] | None,
    ) -> None:
        """Everything that must pass right before a request: the rate slot, `still_due`, the
        deadline, then the fence (last, so nothing can stop the request after it)."""
        if rate_limited and bot_id is not None:
            max_wait = MAX_RATE_WAIT
            if deadline is not None:
                max_wait = min(max_wait, deadline - time.monotonic())
            self.limiter.acquire(bot_id, chat_id, max_wait)
        if still_due is not None and not still_due():
            raise NotDueError("no longer due when its rate slot came")
        if deadline is not None and time.monotonic() > deadline:
            raise TransientError(0, "send deadline passed before the request")
        if fence is not None:
            fence()

    def _post(
        self,
        url: str,
        payload: dict[str, Any],
        progress: SendProgress,
        unsent: Callable[[], None] | None,
    ) -> requests.Response | TransientError:
        """The request itself: Telegram's answer, a TransientError when the connection was
        never made; AmbiguousError when the request may have gone out unanswered."""
        try:
            return self.session.post(url, json=payload, timeout=self.settings.telegram_timeout)
        except requests.RequestException as exc:
            if not _certainly_unsent(exc):
                kind = "timeout" if isinstance(exc, requests.Timeout) else "reset"
                metrics.TELEGRAM_ERRORS.labels(f"ambiguous_{kind}").inc()
                # Not chained: requests' message quotes the URL, and the URL holds the token.
                raise AmbiguousError(
                    0, f"no answer after the request went out ({kind}: {_cause(exc)})"
                ) from None
            progress.maybe_sent = False
            self._unsent(unsent)
            metrics.TELEGRAM_ERRORS.labels("connection").inc()
            return TransientError(0, f"connection error ({_cause(exc)})")

    def _refused(
        self,
        resp: requests.Response,
        body: dict,
        bot_id: int | None,
        progress: SendProgress,
        unsent: Callable[[], None] | None,
    ) -> TransientError:
        """Classify an answer other than success: a TransientError to retry (429, 5xx), or
        raise BlockedError (403) / PermanentError (any other 4xx). None of them was delivered."""
        description = str(body.get("description") or resp.reason or "error")
        progress.maybe_sent = False
        if resp.status_code == 429:
            self._unsent(unsent)
            metrics.TELEGRAM_ERRORS.labels("rate_limited").inc()
            retry_after = _retry_after(body)
            if bot_id is not None:
                self.limiter.penalize(bot_id, retry_after)
            return TransientError(429, description, retry_after)
        if resp.status_code == 403:
            metrics.TELEGRAM_ERRORS.labels("blocked").inc()
            raise BlockedError(403, description)
        if resp.status_code >= 500:
            self._unsent(unsent)
            metrics.TELEGRAM_ERRORS.labels("server_error").inc()
            return TransientError(resp.status_code, description)
        metrics.TELEGRAM_ERRORS.labels("bad_request").inc()
        raise PermanentError(resp.status_code, description)

    @staticmethod
    def _unsent(unsent: Callable[[], None] | None) -> None:
        """An answer proved the request was not delivered: say so, so a sender that dies before
        its next request is not taken for one that may have sent. Best effort: a mark left
        behind only makes a later takeover conservative (ambiguous)."""
        if unsent is None:
            return
        with contextlib.suppress(Exception):
            unsent()

    def _backoff(self, attempt: int, last: TelegramError | None, deadline: float | None) -> None:
        if last is not None and last.status == 429:
            return  # the limiter's hold is the wait
        pause = min(8.0, 0.25 * 2**attempt) * (0.5 + random.random() / 2)
        if deadline is not None and time.monotonic() + pause > deadline:
            raise TransientError(0, "send deadline passed during backoff")
        time.sleep(pause)


def _retry_after(body: dict) -> float:
    raw = (body.get("parameters") or {}).get("retry_after")
    try:
        value = float(raw)
    except (TypeError, ValueError):
        return 1.0
    return value if value > 0 else 1.0


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


def _active_bots(settings: Settings, bot_id: int | None) -> list:
    from sqlalchemy import select

    from grimbots.db import get_db
    from grimbots.models import Bot

    with get_db(settings).read_session() as session:
        query = select(Bot).where(Bot.active.is_(True))
        if bot_id is not None:
            query = query.where(Bot.id == bot_id)
        return list(session.scalars(query))


def webhook_url(settings: Settings, bot_id: int) -> str:
    return f"{settings.public_url}/webhook/telegram/{bot_id}"


def webhooks_due(settings: Settings, bot_id: int | None = None) -> list[dict]:
    """The active bots whose webhook Telegram does not have at this platform's URL
    (getWebhookInfo), so a deploy sets webhooks only when something changed. A bot Telegram
    could not be asked about is listed with its `error` (the client's errors carry no token)."""
    client = get_client(settings)
    due = []
    for bot in _active_bots(settings, bot_id):
        entry = {"bot_id": bot.id, "username": bot.username}
        try:
            info = client.call(bot.token, "getWebhookInfo", {}, rate_limited=False) or {}
        except TelegramError as exc:
            due.append({**entry, "url": None, "error": exc.description})
            continue
        custom = bool(settings.webhook_certificate)
        if info.get("url") != webhook_url(settings, bot.id):
            due.append({**entry, "url": info.get("url")})
        elif bool(info.get("has_custom_certificate")) != custom:
            due.append({**entry, "url": info.get("url"), "certificate": custom})
    return due


def _upload_webhook(client: TelegramClient, token: str, payload: dict, pem: bytes) -> None:
    """setWebhook with the certificate as a multipart upload (Telegram takes no other form)."""
    fields = {k: json.dumps(v) if isinstance(v, list) else str(v) for k, v in payload.items()}
    url = f"{client.base}/bot{token}/setWebhook"
    try:
        resp = client.session.post(
            url,
            data=fields,
            files={"certificate": ("certificate.pem", pem, "application/x-pem-file")},
            timeout=client.settings.telegram_timeout,
        )
    except requests.RequestException as exc:  # not chained: the URL holds the token
        raise TransientError(0, f"connection error ({_cause(exc)})") from None
    body = _json(resp)
    if resp.status_code != 200 or not body.get("ok"):
        description = str(body.get("description") or resp.reason or "error")
        raise PermanentError(resp.status_code, description)


def set_webhooks(settings: Settings, bot_id: int | None = None) -> list[dict]:
    """Point each active bot's webhook at this platform, with its secret token (and the
    configured self-signed certificate, uploaded, when GRIMBOTS_WEBHOOK_CERTIFICATE is set)."""
    client = get_client(settings)
    pem = Path(settings.webhook_certificate).read_bytes() if settings.webhook_certificate else b""
    results = []
    for bot in _active_bots(settings, bot_id):
        payload = {
            "url": webhook_url(settings, bot.id),
            "secret_token": bot.webhook_secret,
            "allowed_updates": ["message", "callback_query", "my_chat_member"],
            "max_connections": 40,
        }
        try:
            if pem:
                _upload_webhook(client, bot.token, payload, pem)
            else:
                client.call(bot.token, "setWebhook", payload, rate_limited=False)
            results.append({"bot_id": bot.id, "username": bot.username, "ok": True})
        except TelegramError as exc:
            results.append(
                {"bot_id": bot.id, "username": bot.username, "ok": False, "error": exc.description}
            )
    return results
