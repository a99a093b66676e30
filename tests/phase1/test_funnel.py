"""Phase 1 end to end: a /start the fake Telegram delivers to the deployed webhook over HTTPS
yields exactly one welcome at tg1."""

import random
import time

from conftest import DEMO_BOT_TOKEN, http, wait_for

from grimbots_lab import start_update

SEND_METHODS = {"sendMessage", "sendPhoto", "sendVideo"}


def _sends(telegram_url: str, chat_id: int) -> list[dict]:
    status, calls = http("GET", f"{telegram_url}/_calls?chat_id={chat_id}")
    assert status == 200, calls
    return [c for c in calls if c["method"] in SEND_METHODS and c["ok"]]


def _deliveries(telegram_url: str, update_id: int) -> list[dict]:
    status, attempts = http("GET", f"{telegram_url}/_deliveries?token={DEMO_BOT_TOKEN}")
    assert status == 200, attempts
    return [a for a in attempts if a["update_id"] == update_id]


def test_start_yields_exactly_one_welcome_even_when_telegram_delivers_it_twice(
    telegram_url, demo_webhook
):
    """The fake Telegram on tg1 delivers the update to the registered webhook (https://app1:
    the front door, its certificate verified against Pebble's roots), twice."""
    assert demo_webhook.startswith("https://"), demo_webhook
    chat_id = random.randint(10**9, 2 * 10**9)
    update = start_update(random.randint(10**6, 10**9), chat_id)
    for _ in range(2):  # Telegram resends an update it thinks was not answered
        status, body = http(
            "POST", f"{telegram_url}/_updates", {"token": DEMO_BOT_TOKEN, "update": update}
        )
        assert status == 200, body

    delivered = wait_for(
        lambda: [a for a in _deliveries(telegram_url, update["update_id"]) if a["ok"]], timeout=30
    )
    assert len(delivered) == 2, _deliveries(telegram_url, update["update_id"])
    assert all(a["status"] == 200 for a in delivered), delivered
    welcome = wait_for(lambda: _sends(telegram_url, chat_id), timeout=30)
    assert len(welcome) == 1, welcome
    assert welcome[0]["method"] == "sendPhoto"
    assert welcome[0]["caption"]
    time.sleep(5)
    assert len(_sends(telegram_url, chat_id)) == 1
    assert not [a for a in _deliveries(telegram_url, update["update_id"]) if not a["ok"]]


def test_webhook_with_a_wrong_secret_is_refused(app_url, demo_bot):
    url = f"{app_url}/webhook/telegram/{demo_bot['bot_id']}"
    status, _ = http("POST", url, start_update(1, 1), {"X-Telegram-Bot-Api-Secret-Token": "wrong"})
    assert status in (401, 403)
