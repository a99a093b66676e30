"""Phase 1 end to end: a /start sent to the deployed webhook yields exactly one welcome at tg1."""

import random
import time

from conftest import http, wait_for

from grimbots_lab import start_update

SEND_METHODS = {"sendMessage", "sendPhoto", "sendVideo"}


def _sends(telegram_url: str, chat_id: int) -> list[dict]:
    status, calls = http("GET", f"{telegram_url}/_calls?chat_id={chat_id}")
    assert status == 200, calls
    return [c for c in calls if c["method"] in SEND_METHODS and c["ok"]]


def test_start_yields_exactly_one_welcome_even_when_telegram_delivers_it_twice(
    app_url, telegram_url, demo_bot
):
    chat_id = random.randint(10**9, 2 * 10**9)
    update = start_update(random.randint(10**6, 10**9), chat_id)
    url = f"{app_url}/webhook/telegram/{demo_bot['bot_id']}"
    headers = {"X-Telegram-Bot-Api-Secret-Token": demo_bot["webhook_secret"]}
    for _ in range(2):  # Telegram resends an update it thinks was not answered
        status, body = http("POST", url, update, headers)
        assert status == 200, body

    welcome = wait_for(lambda: _sends(telegram_url, chat_id), timeout=30)
    assert len(welcome) == 1, welcome
    assert welcome[0]["method"] == "sendPhoto"
    assert welcome[0]["caption"]
    time.sleep(5)
    assert len(_sends(telegram_url, chat_id)) == 1


def test_webhook_with_a_wrong_secret_is_refused(app_url, demo_bot):
    url = f"{app_url}/webhook/telegram/{demo_bot['bot_id']}"
    status, _ = http("POST", url, start_update(1, 1), {"X-Telegram-Bot-Api-Secret-Token": "wrong"})
    assert status in (401, 403)
