"""JSON request bodies that cannot turn into a 500 further down.

`json.loads` accepts what the rest of the app cannot store or hash: nesting deep enough to
exhaust the recursion limit (in the parser, in pickle, in jsonify), lone UTF-16 surrogates
("\\ud800", which no UTF-8 encoder, database or metric label takes), integers of any size (a
database column is 64 bits) and NaN/Infinity. Every JSON body is read through `loads`, which
refuses all of these with one exception a view turns into a 400.
"""

from __future__ import annotations

import json
from typing import Any

# Telegram's own updates nest about 8 levels (a reply inside a message inside a callback);
# the admin API's bodies 3. Far below Python's recursion limit.
MAX_DEPTH = 32
INT64_MIN, INT64_MAX = -(2**63), 2**63 - 1


class BadJson(ValueError):
    """The body is not JSON the app accepts; the message is safe to show the caller."""


def _refuse_constant(name: str) -> Any:
    raise BadJson(f"{name} is not a JSON number")


def loads(raw: bytes | str, max_depth: int = MAX_DEPTH) -> Any:
    """Parse and check a body: depth, strings (valid Unicode), integers (64-bit), no NaN."""
    try:
        value = json.loads(raw, parse_constant=_refuse_constant)
    except BadJson:
        raise
    except RecursionError:
        raise BadJson(f"JSON nested deeper than {max_depth} levels") from None
    except (ValueError, UnicodeDecodeError):
        raise BadJson("body is not valid JSON") from None
    check(value, max_depth)
    return value


def _check_str(text: str) -> None:
    if not text.isascii():
        try:
            text.encode("utf-8")
        except UnicodeEncodeError:
            raise BadJson("strings must be valid Unicode (no lone surrogates)") from None


def check(value: Any, max_depth: int = MAX_DEPTH) -> None:
    """Walk a parsed value without recursion; raise BadJson at the first thing refused.

    On the webhook's hot path for every update: exact type tests (JSON gives only dict, list,
    str, int, float, bool, None) and no call per value unless a string is not plain ASCII.
    """
    stack = [(value, 1)]
    while stack:
        node, depth = stack.pop()
        kind = type(node)
        if kind is dict:
            for key in node:
                if not key.isascii():
                    _check_str(key)
            items = node.values()
        elif kind is list:
            items = node
        else:
            items = (node,)
            depth = 0  # a scalar at the top
        if depth > max_depth:
            raise BadJson(f"JSON nested deeper than {max_depth} levels")
        for item in items:
            kind = type(item)
            if kind is str:
                if not item.isascii():
                    _check_str(item)
            elif kind is int:
                if not INT64_MIN <= item <= INT64_MAX:
                    raise BadJson("integers must fit in 64 bits")
            elif kind is dict or kind is list:
                stack.append((item, depth + 1))
