"""Telegram Bot API client: one pooled HTTP session per process, limits enforced across processes.

Limits (Telegram's, shared by every process and host through Redis, `ratelimit`): at most 30
messages per bot and 1 per chat in any one-second window at Telegram; a send's slot is held from
the grant until its answer, so the delay between them never crowds a window. A 429 answer's
retry_after (uncapped) is pushed into the shared limiter, so every sender of that bot waits it
out. Only failures that prove the request never reached Telegram (connect errors, 5xx, 429) are
retried; a read timeout or a reset after the request went out is ambiguous and raised as such,
never resent here. 403 means the user blocked the bot.
"""

from __future__ import annotations

import contextlib
import json
import logging
import random
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import requests
from requests.adapters import HTTPAdapter
from urllib3.exceptions import ConnectTimeoutError, NewConnectionError

from grimbots import metrics
from grimbots.ratelimit import MAX_RATE_WAIT, RateLimiter, RateWaitExceeded, Slot
from grimbots.settings import Settings

log = logging.getLogger(__name__)

# A request's slot stays in flight at most this many client timeouts after its grant (connect,
# write and read are each bounded by the timeout): the bound for a send whose outcome is unknown.
INFLIGHT_TIMEOUTS = 3


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
                self.settings.telegram_bot_rate,
                self.settings.telegram_chat_rate,
                inflight=INFLIGHT_TIMEOUTS * self.settings.telegram_timeout,
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
            slot = self._clear_to_send(bot_id, chat_id, rate_limited, deadline, still_due, fence)
            progress.maybe_sent = True
            # Raising (ambiguous, a job timeout): the slot stays in flight until its bound.
            resp = self._post(url, payload, progress, unsent)
            self._release(slot, sent=not isinstance(resp, TransientError))
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
    ) -> Slot | None:
        """Everything that must pass right before a request: the rate slot, `still_due`, the
        deadline, then the fence (last, so nothing can stop the request after it). Returns the
        slot, in flight; freed again when anything stops the request."""
        slot = None
        if rate_limited and bot_id is not None:
            max_wait = MAX_RATE_WAIT
            if deadline is not None:
                max_wait = min(max_wait, deadline - time.monotonic())
            try:
                slot = self.limiter.acquire(bot_id, chat_id, max_wait)
            except RateWaitExceeded as exc:
                raise TransientError(429, "local rate limit wait exceeded", exc.wait) from None
        try:
            if still_due is not None and not still_due():
                raise NotDueError("no longer due when its rate slot came")
            if deadline is not None and time.monotonic() > deadline:
                raise TransientError(0, "send deadline passed before the request")
            if fence is not None:
                fence()
        except BaseException:
            self._release(slot, sent=False)
            raise
        return slot

    def _release(self, slot: Slot | None, sent: bool) -> None:
        """Stamp an answered send's slot with its answer's time, or free one never sent. Best
        effort: a slot left in flight only holds its window until its bound."""
        if slot is None:
            return
        try:
            self.limiter.release(slot, sent)
        except Exception as exc:  # noqa: BLE001 - the send's outcome matters more than this
            log.warning("rate slot not released: %s", type(exc).__name__)

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
