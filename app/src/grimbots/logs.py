"""JSON logs on stderr (journald keeps them; one line per event, machine-readable).

No user text and no secret reaches a log line: RQ attaches a failed job's arguments (Telegram
updates with users' messages, payloads) to its error record, so those fields are redacted here,
and the database engines hide bound parameters (`hide_parameters=True` in db.py).
"""

from __future__ import annotations

import logging
import sys

from pythonjsonlogger.json import JsonFormatter

# Record attributes that carry job arguments (set by RQ's worker on job failures).
REDACTED_FIELDS = ("arguments", "kwargs", "args_repr", "description")


class RedactJobArguments(logging.Filter):
    """Replace job arguments on a log record with a marker (the job id stays for tracing)."""

    def filter(self, record: logging.LogRecord) -> bool:
        for name in REDACTED_FIELDS:
            if name in record.__dict__:
                record.__dict__[name] = "[redacted]"
        return True


def json_handler(stream=None) -> logging.Handler:
    """The app's log handler: JSON lines, job arguments redacted."""
    handler = logging.StreamHandler(stream or sys.stderr)
    handler.setFormatter(
        JsonFormatter(
            "%(asctime)s %(levelname)s %(name)s %(message)s",
            rename_fields={"asctime": "ts", "levelname": "level", "name": "logger"},
        )
    )
    handler.addFilter(RedactJobArguments())
    return handler


def configure_logging(level: str = "INFO") -> None:
    handler = json_handler()
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)
