"""grimbots_lab.Redelivering against a local webhook that refuses twice, then accepts."""

from __future__ import annotations

import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from grimbots_lab import Redelivering


class _Webhook(BaseHTTPRequestHandler):
    seen: list[tuple[str, dict]] = []

    def do_POST(self):  # noqa: N802 - http.server's name
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        self.seen.append((self.headers["X-Telegram-Bot-Api-Secret-Token"], body))
        self.send_response(503 if len(self.seen) <= 2 else 200)
        self.send_header("Content-Length", "0")
        self.end_headers()

    def log_message(self, *args):
        pass


def test_an_update_is_delivered_again_until_it_is_answered_200():
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Webhook)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        tg = Redelivering(f"http://127.0.0.1:{server.server_port}/hook", "s" * 16)
        assert tg.deliver({"update_id": 7}) is True
    finally:
        server.shutdown()
    assert [s for s, _ in _Webhook.seen] == ["s" * 16] * 3
    assert [b["update_id"] for _, b in _Webhook.seen] == [7, 7, 7]
    assert [status for _, status in tg.answers] == [503, 503, 200]
    assert (tg.attempts, tg.refused) == (3, 2)
    assert tg.longest_pause() >= 2.0  # a second's wait after each refusal


def test_the_longest_pause_runs_from_the_first_refusal_to_the_next_200():
    tg = Redelivering("http://127.0.0.1:9/hook", "s" * 16)
    tg.answers = [(0.0, 200), (1.0, 503), (2.0, 0), (3.5, 200), (4.0, 503), (4.5, 200), (9.0, 503)]
    assert tg.longest_pause() == 2.5 and tg.refused == 4


def test_nothing_is_delivered_after_the_deadline():
    tg = Redelivering("http://127.0.0.1:9/hook", "s" * 16, deadline=0.0)
    assert tg.deliver({"update_id": 1}) is False and tg.attempts == 0
