"""Text from outside (query strings, headers) made fit for a database column.

PostgreSQL's text cannot hold NUL, and control characters in attribution fields serve no one:
a value with them would be stored in Redis, then fail every write of the lead that copies it.
"""

from __future__ import annotations

import re

# C0 controls (NUL included) and DEL.
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")


def clean(value: object, limit: int) -> str | None:
    """`value` without control characters, cut to `limit` characters; None when empty."""
    if value is None:
        return None
    text = _CONTROL.sub("", value if isinstance(value, str) else str(value))
    # Lone surrogates cannot be encoded for either database: replace them.
    text = text.encode("utf-8", "replace").decode("utf-8")
    return text[:limit] or None


def strip_nul(value: str) -> tuple[str, bool]:
    """`value` without NUL characters, and whether any were removed."""
    if "\x00" not in value:
        return value, False
    return value.replace("\x00", ""), True
