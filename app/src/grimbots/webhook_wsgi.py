"""The webhook's hot path without Flask's request machinery.

Telegram's deliveries are almost all the traffic, and Flask's routing, request context, hooks
and response objects cost more CPU than the intake itself. This WSGI middleware answers
`POST /webhook/telegram/<bot_id>` with a plain path, a Content-Length and a body within the limit
straight from the environ, through the same `webhook.take_update` the Flask view calls, and
records the same metrics. Anything else (another route or method, an odd path, a chunked or
oversized body) goes to Flask unchanged, which answers it as before.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterable
from http import HTTPStatus
from typing import Any

from grimbots import metrics, webhook
from grimbots.errors import UNAVAILABLE, where

log = logging.getLogger(__name__)

PREFIX = "/webhook/telegram/"
SECRET_ENVIRON = "HTTP_" + webhook.SECRET_HEADER.upper().replace("-", "_")
MAX_BOT_ID = 2147483647  # the Flask route's int(max=...)
ROUTE = "webhook"  # the label metrics.route_label gives the Flask route
_STATUS_LINES = {s.value: f"{s.value} {s.phrase}" for s in HTTPStatus}


def _bot_id(path: str) -> int | None:
    """The bot id of a plain webhook path ('/webhook/telegram/42'), else None (Flask decides)."""
    if not path.startswith(PREFIX):
        return None
    tail = path[len(PREFIX) :]
    if not (tail.isascii() and tail.isdigit()) or len(tail) > 10 or tail[0] == "0":
        return None
    bot_id = int(tail)
    return bot_id if bot_id <= MAX_BOT_ID else None


class WebhookFastPath:
    """WSGI middleware in front of the Flask app (inside BodyLimit, which has already turned a
    chunked body into one with a length)."""

    def __init__(self, app: Callable, max_body: int):
        self.app = app
        self.max_body = max_body
        self._requests: dict[int, Any] = {}  # status -> the bound counter, built once each
        self._latency = metrics.HTTP_LATENCY.labels(ROUTE)

    def __call__(self, environ: dict[str, Any], start_response: Callable) -> Iterable[bytes]:
        if environ.get("REQUEST_METHOD") != "POST":
            return self.app(environ, start_response)
        bot_id = _bot_id(environ.get("PATH_INFO", ""))
        length = environ.get("CONTENT_LENGTH", "")
        if bot_id is None or not length.isdigit() or int(length) > self.max_body:
            return self.app(environ, start_response)
        started = time.perf_counter()
        try:
            raw = environ["wsgi.input"].read(int(length))
            status, body = webhook.take_update(bot_id, environ.get(SECRET_ENVIRON, ""), raw)
        except UNAVAILABLE as exc:
            log.warning(
                "dependency unavailable",
                extra={"route": PREFIX, "error_type": type(exc).__name__, "where": where(exc)},
            )
            status, body = webhook.unavailable()
        except Exception as exc:  # noqa: BLE001 - a bug answers 500 as Flask's handler would
            log.error(
                "unhandled error",
                extra={"route": PREFIX, "error_type": type(exc).__name__, "where": where(exc)},
            )
            status, body = webhook.answer(500, ok=False, error="internal error")
        counter = self._requests.get(status)
        if counter is None:
            label = metrics.status_label(status)
            counter = self._requests[status] = metrics.HTTP_REQUESTS.labels(ROUTE, "POST", label)
        counter.inc()
        self._latency.observe(time.perf_counter() - started)
        start_response(
            _STATUS_LINES.get(status, f"{status} Unknown"),
            [("Content-Type", "application/json"), ("Content-Length", str(len(body)))],
        )
        return [body]
