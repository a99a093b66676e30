"""JSON logs on stderr (journald keeps them; one line per event, machine-readable).

No user text and no secret reaches a log line: RQ attaches a failed job's arguments (Telegram
updates with users' messages, payloads) to its error record, so those fields are redacted here,
and the database engines hide bound parameters (`hide_parameters=True` in db.py). Bot tokens
are cut out of every record (message, arguments, extra fields, exception text) whatever logger
wrote it: urllib3 logs the request path `/bot<token>/<method>` at DEBUG, and an SSL or proxy
error from requests quotes that URL in its message.
"""

from __future__ import annotations

import logging
import re
import sys
import traceback
from typing import Any

from pythonjsonlogger.json import JsonFormatter

# Record attributes that carry job arguments (set by RQ's worker on job failures).
REDACTED_FIELDS = ("arguments", "kwargs", "args_repr", "description")
TOKEN_MARK = "[token]"
# A Bot API path (`/bot<id>:<secret>`, whatever the secret's shape) and a bare token (bot id,
# colon, 35 URL-safe characters, as BotFather issues them).
_TOKEN_RE = re.compile(r"(?<=/bot)\d+:[^/\s'\"?#]+|(?<![\w-])\d{1,20}:[A-Za-z0-9_-]{35}(?![\w-])")
# The attributes every LogRecord has; anything else on a record came in through `extra`.
_STANDARD = frozenset(logging.makeLogRecord({}).__dict__) | {"message", "asctime"}


def redact(text: str) -> str:
    """The text with every bot token replaced by a marker (tokens always hold a colon)."""
    if ":" not in text:
        return text
    return _TOKEN_RE.sub(TOKEN_MARK, text)


def _redact_value(value: Any) -> Any:
    return redact(value) if isinstance(value, str) else value


class RedactJobArguments(logging.Filter):
    """Replace job arguments on a log record with a marker (the job id stays for tracing)."""

    def filter(self, record: logging.LogRecord) -> bool:
        for name in REDACTED_FIELDS:
            if name in record.__dict__:
                record.__dict__[name] = "[redacted]"
        return True


class RedactTokens(logging.Filter):
    """Cut bot tokens out of a record before any formatter sees it.

    The message is rendered here (so an argument of any type, an exception object included, is
    covered) and the exception is formatted here too: formatters print `exc_text` when the record
    no longer holds `exc_info`. Running it twice (a record reaching two handlers) is harmless.
    """

    def filter(self, record: logging.LogRecord) -> bool:
        if isinstance(record.msg, dict):
            record.msg = {k: _redact_value(v) for k, v in record.msg.items()}
        else:
            try:
                message = record.getMessage()
            except Exception:  # a bad format string: keep its parts, redacted
                message = f"{record.msg} {record.args}"
            record.msg, record.args = redact(message), None
        if isinstance(record.exc_info, tuple):
            record.exc_text = "".join(traceback.format_exception(*record.exc_info)).rstrip("\n")
            record.exc_info = None
        if record.exc_text:
            record.exc_text = redact(record.exc_text)
        if record.stack_info:
            record.stack_info = redact(record.stack_info)
        for name, value in list(record.__dict__.items()):
            if name not in _STANDARD and isinstance(value, str):
                record.__dict__[name] = redact(value)
        return True


def json_handler(stream=None) -> logging.Handler:
    """The app's log handler: JSON lines, job arguments and bot tokens redacted."""
    handler = logging.StreamHandler(stream or sys.stderr)
    handler.setFormatter(
        JsonFormatter(
            "%(asctime)s %(levelname)s %(name)s %(message)s",
            rename_fields={"asctime": "ts", "levelname": "level", "name": "logger"},
        )
    )
    handler.addFilter(RedactJobArguments())
    handler.addFilter(RedactTokens())
    return handler


def configure_logging(level: str = "INFO", stream=None) -> None:
    """The root logger writes through json_handler; every record reaches it unless its logger
    stops propagation, so handlers other libraries already installed (Gunicorn's error log) get
    the token filter too."""
    handler = json_handler(stream)
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)
    for logger in list(logging.root.manager.loggerDict.values()):
        for other in getattr(logger, "handlers", ()):
            if not any(isinstance(f, RedactTokens) for f in other.filters):
                other.addFilter(RedactTokens())
