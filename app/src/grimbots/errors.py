"""JSON errors for every failure: no HTML traceback ever reaches a client.

Redis or the database being away is not the caller's fault and not a bug: 503, so Telegram,
a payment gateway or a seller's script tries again. Only a real bug is a 500.

Nothing a caller sent and no secret reaches these log lines: an exception's message may quote
either (a SQLAlchemy error carries its bound parameters, a KeyError the user's key), so the logs
name the exception's class and where it was raised, never its text.
"""

from __future__ import annotations

import logging
import traceback

from flask import Flask, jsonify, request
from redis.exceptions import RedisError
from sqlalchemy.exc import DisconnectionError, InterfaceError, OperationalError
from werkzeug.exceptions import HTTPException

from grimbots.jsonbody import BadJson

log = logging.getLogger(__name__)

UNAVAILABLE = (RedisError, OperationalError, InterfaceError, DisconnectionError)


class ApiError(Exception):
    """An error with an HTTP status and a message safe to show the caller."""

    def __init__(self, status: int, message: str, **extra):
        super().__init__(message)
        self.status = status
        self.message = message
        self.extra = extra


def error_response(status: int, message: str, **extra):
    body = {"ok": False, "error": message, **extra}
    return jsonify(body), status


def where(exc: BaseException) -> list[str]:
    """The frames an exception went through, as file:line function (no values, no message)."""
    return [
        f"{frame.filename.rsplit('/', 2)[-1]}:{frame.lineno} {frame.name}"
        for frame in traceback.extract_tb(exc.__traceback__)
    ][-8:]


def _route() -> str:
    return request.url_rule.rule if request.url_rule else "unmatched"


def register_error_handlers(app: Flask) -> None:
    @app.errorhandler(ApiError)
    def _api_error(exc: ApiError):
        return error_response(exc.status, exc.message, **exc.extra)

    @app.errorhandler(BadJson)
    def _bad_json(exc: BadJson):
        # A body parsed through jsonbody but not caught by its view is still the caller's fault.
        return error_response(400, str(exc))

    @app.errorhandler(HTTPException)
    def _http_error(exc: HTTPException):
        return error_response(exc.code or 500, exc.description or exc.name)

    def _unavailable(exc: Exception):
        log.warning(
            "dependency unavailable",
            extra={"route": _route(), "error_type": type(exc).__name__, "where": where(exc)},
        )
        return error_response(503, "temporarily unavailable")

    for cls in UNAVAILABLE:
        app.register_error_handler(cls, _unavailable)

    @app.errorhandler(Exception)
    def _unexpected(exc: Exception):
        log.error(
            "unhandled error",
            extra={"route": _route(), "error_type": type(exc).__name__, "where": where(exc)},
        )
        return error_response(500, "internal error")
