"""Load test shaped like production traffic: ad clicks, /start, free text, offer taps, health.

Each simulated user is a visitor: clicks the tracking link (`/go/<slug>`, 302 to the bot),
arrives in the bot with `/start <token>`, writes, taps offers. Telegram updates are POSTed to the
webhook exactly as Telegram would, with the bot's secret header and update ids unique across users
and load processes (a random per-process base plus a counter).

Weights (per task pick): /start 50, free text 30, offer callback 20, /health 10, /go click 10.

Run (headless, against `grimbots seed-demo` data, with RQ workers running so /health is 200):
    .venv/bin/locust -f app/locustfile.py --headless -u 100 -r 20 -t 2m --host http://127.0.0.1:5000

Configuration (environment; defaults match `grimbots seed-demo` on a fresh database):
    GRIMBOTS_LOAD_BOT_ID      bot id in /webhook/telegram/<id>       (default 1)
    GRIMBOTS_LOAD_SECRET      X-Telegram-Bot-Api-Secret-Token value  (default demo-webhook-secret,
                              or GRIMBOTS_DEMO_WEBHOOK_SECRET when that is set, as seed-demo does)
    GRIMBOTS_LOAD_SLUG        redirect pool slug for /go/<slug>      (default demo)
    GRIMBOTS_LOAD_OFFER_ID    offer id in callback data buy:<id>     (default 1)
    GRIMBOTS_LOAD_MAX_ERROR_RATIO  exit code 1 above this failure ratio (default 0.01)

The process exits 1 when more than 1% of requests failed (any non-2xx answer, except the 302
of /go which is the expected answer).
"""

from __future__ import annotations

import itertools
import json
import os
import random
import secrets
import time
from urllib.parse import parse_qs, urlsplit

from locust import HttpUser, between, events, task

BOT_ID = int(os.environ.get("GRIMBOTS_LOAD_BOT_ID", "1"))
SECRET = os.environ.get("GRIMBOTS_LOAD_SECRET") or os.environ.get(
    "GRIMBOTS_DEMO_WEBHOOK_SECRET", "demo-webhook-secret"
)
SLUG = os.environ.get("GRIMBOTS_LOAD_SLUG", "demo")
OFFER_ID = int(os.environ.get("GRIMBOTS_LOAD_OFFER_ID", "1"))
MAX_ERROR_RATIO = float(os.environ.get("GRIMBOTS_LOAD_MAX_ERROR_RATIO", "0.01"))

WEBHOOK_PATH = f"/webhook/telegram/{BOT_ID}"
HEADERS = {"Content-Type": "application/json", "X-Telegram-Bot-Api-Secret-Token": SECRET}

_rng = random.SystemRandom()
# Update ids: a random per-process base (2**20 slots of 2**30 ids; stays below 2**53 so JSON
# numbers are exact) plus a counter. Two processes collide with probability about 1e-6.
_update_ids = itertools.count(_rng.randrange(1, 2**20) * 2**30)
# Telegram user ids: same idea, in a separate range so ids never look like update ids.
_user_ids = itertools.count(_rng.randrange(1, 2**20) * 2**20 + 10**15)
_message_ids = itertools.count(1)

FREE_TEXTS = (
    "oi",
    "quanto custa?",
    "tem desconto?",
    "como funciona o pagamento?",
    "aceita cartão?",
    "quero o vip",
    "já paguei",
)


def _user(uid: int) -> dict:
    return {"id": uid, "is_bot": False, "first_name": "Lead", "language_code": "pt-br"}


def _message_update(uid: int, text: str) -> dict:
    return {
        "update_id": next(_update_ids),
        "message": {
            "message_id": next(_message_ids),
            "date": int(time.time()),
            "chat": {"id": uid, "type": "private", "first_name": "Lead"},
            "from": _user(uid),
            "text": text,
        },
    }


def _callback_update(uid: int, data: str) -> dict:
    return {
        "update_id": next(_update_ids),
        "callback_query": {
            "id": str(next(_update_ids)),
            "from": _user(uid),
            "message": {
                "message_id": 1,
                "chat": {"id": uid, "type": "private"},
                "date": int(time.time()),
            },
            "chat_instance": str(uid),
            "data": data,
        },
    }


class TelegramVisitor(HttpUser):
    """One ad visitor: clicks, starts the bot, chats and taps offers, like a real lead."""

    wait_time = between(0.5, 2.0)

    def on_start(self) -> None:
        self.uid = next(_user_ids)
        self.tracking_token: str | None = None
        self.sent = 0

    def _post_update(self, update: dict, name: str) -> None:
        body = json.dumps(update, ensure_ascii=False)
        with self.client.post(
            WEBHOOK_PATH, data=body, headers=HEADERS, name=name, catch_response=True
        ) as response:
            if response.status_code != 200:
                response.failure(f"{name}: HTTP {response.status_code} {response.text[:120]}")

    @task(50)
    def start_command(self) -> None:
        """A new lead arrives from an ad: a fresh Telegram user sends /start <tracking token>."""
        self.uid = next(_user_ids)
        token = self.tracking_token or secrets.token_hex(16)
        self.tracking_token = None
        self._post_update(_message_update(self.uid, f"/start {token}"), "webhook /start")

    @task(30)
    def free_text(self) -> None:
        self.sent += 1
        text = f"{_rng.choice(FREE_TEXTS)} ({self.sent})"
        self._post_update(_message_update(self.uid, text), "webhook text")

    @task(20)
    def offer_callback(self) -> None:
        self._post_update(_callback_update(self.uid, f"buy:{OFFER_ID}"), "webhook callback")

    @task(10)
    def health(self) -> None:
        with self.client.get("/health", name="/health", catch_response=True) as response:
            if response.status_code != 200:
                response.failure(f"/health: HTTP {response.status_code}")

    @task(10)
    def click(self) -> None:
        """An ad click: 302 to t.me (never followed: no network); keep the token for /start."""
        params = {
            "utm_source": "facebook",
            "utm_campaign": f"camp{_rng.randrange(5)}",
            "utm_medium": "cpc",
            "fbclid": secrets.token_urlsafe(12),
        }
        with self.client.get(
            f"/go/{SLUG}",
            params=params,
            name="/go/<slug>",
            allow_redirects=False,
            catch_response=True,
        ) as response:
            if response.status_code != 302:
                response.failure(f"/go: HTTP {response.status_code}")
                return
            location = response.headers.get("Location", "")
            start = parse_qs(urlsplit(location).query).get("start")
            if not location.startswith("https://t.me/") or not start:
                response.failure(f"/go: unexpected Location {location[:120]!r}")
                return
            response.success()
            self.tracking_token = start[0]


@events.quitting.add_listener
def _fail_on_errors(environment, **_kwargs) -> None:
    """Exit 1 when the failure ratio is above the budget (1% by default), else 0.

    Locust alone exits 1 on any failure; a few errors within the budget must not fail a run.
    """
    total = environment.stats.total
    ratio = total.fail_ratio
    if total.num_requests == 0:
        print("load test: no request was made")
        environment.process_exit_code = 1
    elif ratio > MAX_ERROR_RATIO:
        print(f"load test: error ratio {ratio:.2%} is above {MAX_ERROR_RATIO:.2%}")
        environment.process_exit_code = 1
    else:
        print(
            f"load test: {total.num_requests} requests, error ratio {ratio:.2%}, "
            f"p99 {total.get_response_time_percentile(0.99):.0f} ms"
        )
        environment.process_exit_code = 0
