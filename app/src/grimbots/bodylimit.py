"""The request-body limit, for chunked bodies too: refused whole with 413, never cut.

With a Content-Length over the limit, Flask answers 413 before reading anything. A chunked
body has no length: Gunicorn marks it `wsgi.input_terminated` and werkzeug then reads it
through a stream that stops at the limit, so the app would get the first mebibyte of a longer
body as if it were all of it (a cut JSON document, or worse, a valid shorter one). This
middleware reads such a body up to one byte past the limit first: over it, 413; within it, the
app gets the whole body with its length set, like any other request.
"""

from __future__ import annotations

import io
import json
from collections.abc import Callable, Iterable
from typing import Any

CHUNK = 64 * 1024


def _read_at_most(stream, size: int) -> bytes:
    parts, total = [], 0
    while total < size:
        chunk = stream.read(min(CHUNK, size - total))
        if not chunk:
            break
        parts.append(chunk)
        total += len(chunk)
    return b"".join(parts)


class BodyLimit:
    """WSGI middleware: length-less (chunked) bodies over `limit` bytes answer 413."""

    def __init__(self, app: Callable, limit: int):
        self.app = app
        self.limit = limit

    def __call__(self, environ: dict[str, Any], start_response: Callable) -> Iterable[bytes]:
        if environ.get("wsgi.input_terminated") and not environ.get("CONTENT_LENGTH"):
            body = _read_at_most(environ["wsgi.input"], self.limit + 1)
            if len(body) > self.limit:
                payload = json.dumps(
                    {"ok": False, "error": f"the body is over {self.limit} bytes"}
                ).encode()
                start_response(
                    "413 Content Too Large",
                    [
                        ("Content-Type", "application/json"),
                        ("Content-Length", str(len(payload))),
                        ("Connection", "close"),
                    ],
                )
                return [payload]
            environ["wsgi.input"] = io.BytesIO(body)
            environ["CONTENT_LENGTH"] = str(len(body))
        return self.app(environ, start_response)
