"""The fake Telegram Bot API behaves like Telegram where the app depends on it."""
# ruff: noqa: S310  (urllib against the local fake only)

from __future__ import annotations

import json
import sys
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
import uuid
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))

from fake_telegram import FakeTelegram  # noqa: E402

TOKEN = "123456:AAH-test_token"
OTHER = "777:other"


@pytest.fixture
def fake():
    server = FakeTelegram(port=0).start()
    yield server
    server.stop()


def call(fake, path, *, json_body=None, form=None, query=None, method=None, raw=None, ctype=None):
    """One HTTP request to the fake; returns (status, decoded JSON body)."""
    url = fake.base_url + path
    if query:
        url += "?" + urllib.parse.urlencode(query)
    data, headers = None, {}
    if json_body is not None:
        data, headers = json.dumps(json_body).encode(), {"Content-Type": "application/json"}
    elif form is not None:
        data = urllib.parse.urlencode(form).encode()
        headers = {"Content-Type": "application/x-www-form-urlencoded"}
    elif raw is not None:
        data, headers = raw, {"Content-Type": ctype}
    verb = method or ("POST" if data is not None else "GET")
    request = urllib.request.Request(url, data=data, headers=headers, method=verb)
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as error:
        return error.code, json.loads(error.read())


def api(fake, method, token=TOKEN, **kwargs):
    return call(fake, f"/bot{token}/{method}", **kwargs)


# -- Bot API methods -------------------------------------------------------------------------


def test_send_message_answers_like_telegram_with_increasing_message_ids(fake):
    s1, b1 = api(fake, "sendMessage", json_body={"chat_id": 42, "text": "hello"})
    s2, b2 = api(fake, "sendMessage", json_body={"chat_id": 42, "text": "again"})
    assert s1 == s2 == 200
    assert b1["ok"] is True
    msg = b1["result"]
    assert msg["chat"] == {"id": 42, "type": "private"}
    assert msg["text"] == "hello"
    assert isinstance(msg["date"], int) and abs(msg["date"] - time.time()) < 5
    assert msg["from"]["is_bot"] is True
    assert b2["result"]["message_id"] > msg["message_id"]


@pytest.mark.parametrize("encoding", ["json", "form", "query"])
def test_every_parameter_encoding_is_accepted(fake, encoding):
    params = {"chat_id": "99", "text": "enc"}
    kwargs = {"json_body": params} if encoding == "json" else {encoding: params}
    status, body = api(fake, "sendMessage", **kwargs)
    assert status == 200 and body["result"]["chat"]["id"] == 99
    assert fake.calls(method="sendMessage")[0]["text"] == "enc"


def test_multipart_upload_is_accepted_and_recorded_without_the_bytes(fake):
    boundary = uuid.uuid4().hex
    parts = [
        f'--{boundary}\r\nContent-Disposition: form-data; name="chat_id"\r\n\r\n5\r\n',
        f'--{boundary}\r\nContent-Disposition: form-data; name="caption"\r\n\r\ncap\r\n',
        f'--{boundary}\r\nContent-Disposition: form-data; name="photo"; filename="a.jpg"\r\n'
        "Content-Type: image/jpeg\r\n\r\n",
    ]
    raw = "".join(parts).encode() + b"\xff\xd8JPEGDATA" + f"\r\n--{boundary}--\r\n".encode()
    status, body = api(
        fake, "sendPhoto", raw=raw, ctype=f"multipart/form-data; boundary={boundary}"
    )
    assert status == 200, body
    assert body["result"]["caption"] == "cap"
    recorded = fake.calls(method="sendPhoto")[0]
    assert recorded["params"]["photo"] == {"filename": "a.jpg", "size": 10}


def test_method_names_are_case_insensitive_like_telegram(fake):
    status, _ = api(fake, "sendmessage", json_body={"chat_id": 1, "text": "x"})
    assert status == 200
    assert fake.calls(method="sendMessage")[0]["method"] == "sendMessage"


@pytest.mark.parametrize(
    ("method", "field"),
    [("sendPhoto", "photo"), ("sendVideo", "video"), ("sendDocument", "document")],
)
def test_media_methods_return_the_media_and_caption(fake, method, field):
    markup = {"inline_keyboard": [[{"text": "Buy R$ 19,90", "callback_data": "buy:1"}]]}
    status, body = api(
        fake,
        method,
        json_body={"chat_id": 7, field: "file-1", "caption": "cap", "reply_markup": markup},
    )
    assert status == 200
    assert body["result"]["caption"] == "cap"
    assert field in body["result"]
    assert body["result"]["reply_markup"] == markup
    assert fake.calls(method=method)[0]["reply_markup"] == markup


def test_answer_callback_query_returns_true(fake):
    status, body = api(fake, "answerCallbackQuery", json_body={"callback_query_id": "abc"})
    assert (status, body) == (200, {"ok": True, "result": True})


def test_answer_callback_query_without_an_id_is_rejected(fake):
    status, body = api(fake, "answerCallbackQuery", json_body={})
    assert status == 400 and body["description"].startswith("Bad Request:")


def test_edit_message_reply_markup_returns_the_edited_message(fake):
    markup = {"inline_keyboard": [[{"text": "Paid", "callback_data": "noop"}]]}
    status, body = api(
        fake,
        "editMessageReplyMarkup",
        json_body={"chat_id": 3, "message_id": 17, "reply_markup": markup},
    )
    assert status == 200
    assert body["result"]["message_id"] == 17
    assert body["result"]["reply_markup"] == markup


def test_webhook_is_set_reported_and_deleted(fake):
    status, body = api(
        fake,
        "setWebhook",
        form={"url": "https://app.example/webhook/telegram/1", "secret_token": "s3cr-et_X"},
    )
    assert (status, body["result"], body["description"]) == (200, True, "Webhook was set")
    assert fake.webhook(TOKEN)["secret_token"] == "s3cr-et_X"
    _, info = api(fake, "getWebhookInfo")
    assert info["result"]["url"] == "https://app.example/webhook/telegram/1"
    assert info["result"]["pending_update_count"] == 0
    _, body = api(fake, "deleteWebhook")
    assert body["result"] is True
    _, info = api(fake, "getWebhookInfo")
    assert info["result"]["url"] == ""


def test_set_webhook_rejects_a_secret_with_unallowed_characters(fake):
    status, body = api(fake, "setWebhook", json_body={"url": "https://x/y", "secret_token": "a b"})
    assert status == 400 and "secret token" in body["description"]
    assert fake.webhook(TOKEN) is None


def test_get_me_derives_the_bot_from_the_token(fake):
    _, body = api(fake, "getMe")
    assert body["result"]["id"] == 123456
    assert body["result"]["is_bot"] is True
    assert body["result"]["username"].endswith("bot")


def test_get_me_username_is_configurable(fake):
    status, _ = call(fake, "/_bots", json_body={"token": TOKEN, "username": "promo_vip_bot"})
    assert status == 200
    _, body = api(fake, "getMe")
    assert body["result"]["username"] == "promo_vip_bot"
    configured = FakeTelegram(port=0, usernames={OTHER: "other_bot"})
    assert configured.username(OTHER) == "other_bot"
    configured.stop()


# -- validation ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("params", "fragment"),
    [
        ({"text": "no chat"}, "chat_id is empty"),
        ({"chat_id": 1}, "message text is empty"),
        ({"chat_id": 1, "text": "x" * 4097}, "message is too long"),
    ],
)
def test_send_message_is_validated_like_telegram(fake, params, fragment):
    status, body = api(fake, "sendMessage", json_body=params)
    assert status == 400
    assert body == {"ok": False, "error_code": 400, "description": f"Bad Request: {fragment}"}


def test_text_of_exactly_4096_characters_is_accepted(fake):
    status, _ = api(fake, "sendMessage", json_body={"chat_id": 1, "text": "x" * 4096})
    assert status == 200


def test_caption_over_1024_characters_is_rejected_and_1024_accepted(fake):
    status, body = api(
        fake, "sendPhoto", json_body={"chat_id": 1, "photo": "p", "caption": "c" * 1025}
    )
    assert status == 400 and body["description"] == "Bad Request: message caption is too long"
    status, _ = api(
        fake, "sendPhoto", json_body={"chat_id": 1, "photo": "p", "caption": "c" * 1024}
    )
    assert status == 200


def test_media_without_the_file_is_rejected(fake):
    status, body = api(fake, "sendVideo", json_body={"chat_id": 1, "caption": "c"})
    assert status == 400 and "video" in body["description"]


def test_callback_data_over_64_bytes_is_rejected(fake):
    too_long = {"inline_keyboard": [[{"text": "b", "callback_data": "é" * 33}]]}  # 66 bytes
    status, body = api(
        fake, "sendMessage", json_body={"chat_id": 1, "text": "t", "reply_markup": too_long}
    )
    assert status == 400 and body["description"] == "Bad Request: BUTTON_DATA_INVALID"
    fits = {"inline_keyboard": [[{"text": "b", "callback_data": "d" * 64}]]}
    status, _ = api(
        fake, "sendMessage", json_body={"chat_id": 1, "text": "t", "reply_markup": fits}
    )
    assert status == 200


def test_reply_markup_as_a_json_string_in_a_form_is_parsed(fake):
    markup = {"inline_keyboard": [[{"text": "b", "callback_data": "buy:2"}]]}
    status, _ = api(
        fake, "sendMessage", form={"chat_id": 1, "text": "t", "reply_markup": json.dumps(markup)}
    )
    assert status == 200
    assert fake.calls()[0]["reply_markup"] == markup
    status, body = api(fake, "sendMessage", form={"chat_id": 1, "text": "t", "reply_markup": "{x"})
    assert status == 400 and "reply keyboard markup" in body["description"]


def test_unknown_method_answers_404_not_found(fake):
    status, body = api(fake, "sendTelepathy", json_body={"chat_id": 1})
    assert status == 404
    assert body == {"ok": False, "error_code": 404, "description": "Not Found"}
    assert fake.calls()[0]["status"] == 404


def test_invalid_json_body_is_a_bad_request(fake):
    status, body = api(fake, "sendMessage", raw=b"{nope", ctype="application/json")
    assert status == 400 and body["ok"] is False


# -- recording and assertions ----------------------------------------------------------------


def test_every_call_is_recorded_with_token_params_and_status(fake):
    api(fake, "sendMessage", json_body={"chat_id": 5, "text": "hi"})
    api(fake, "sendMessage", json_body={"chat_id": 5})
    calls = fake.calls()
    assert [c["status"] for c in calls] == [200, 400]
    first = calls[0]
    assert first["token"] == TOKEN and first["method"] == "sendMessage"
    assert first["chat_id"] == 5 and first["text"] == "hi"
    assert first["params"] == {"chat_id": 5, "text": "hi"}
    assert first["message_id"] is not None and first["time"] <= time.time()


def test_calls_endpoint_filters_by_method_token_and_chat(fake):
    api(fake, "sendPhoto", json_body={"chat_id": 123, "photo": "p", "caption": "welcome"})
    api(fake, "sendMessage", json_body={"chat_id": 123, "text": "t"})
    api(fake, "sendPhoto", json_body={"chat_id": 456, "photo": "p"})
    api(fake, "sendPhoto", token=OTHER, json_body={"chat_id": 123, "photo": "p"})
    _, welcome = call(
        fake, "/_calls", query={"chat_id": 123, "method": "sendPhoto", "token": TOKEN}
    )
    assert len(welcome) == 1 and welcome[0]["caption"] == "welcome"
    _, all_calls = call(fake, "/_calls")
    assert len(all_calls) == 4
    _, by_chat = call(fake, "/_calls", query={"chat_id": "123"})
    assert len(by_chat) == 3
    _, since = call(fake, "/_calls", query={"since": all_calls[1]["seq"]})
    assert [c["seq"] for c in since] == [c["seq"] for c in all_calls[2:]]


def test_counts_give_successful_sends_per_chat(fake):
    for _ in range(2):
        api(fake, "sendMessage", json_body={"chat_id": 1, "text": "t"})
    api(fake, "sendPhoto", json_body={"chat_id": 1, "photo": "p"})
    api(fake, "sendMessage", json_body={"chat_id": 2, "text": "t"})
    api(fake, "sendMessage", json_body={"chat_id": 2})  # rejected: not counted
    api(fake, "answerCallbackQuery", json_body={"callback_query_id": "q", "chat_id": 2})
    _, counts = call(fake, "/_counts")
    assert counts == {"1": 3, "2": 1}
    _, photos = call(fake, "/_counts", query={"method": "sendPhoto"})
    assert photos == {"1": 1}
    assert fake.counts(token=OTHER) == {}


def test_delete_calls_forgets_calls_counts_and_faults(fake):
    api(fake, "sendMessage", json_body={"chat_id": 1, "text": "t"})
    fake.add_fault(status=500)
    status, _ = call(fake, "/_calls", method="DELETE")
    assert status == 200
    assert fake.calls() == [] and fake.counts() == {} and fake.faults() == []


def test_recording_is_thread_safe_under_concurrent_senders(fake):
    def send(chat):
        for i in range(25):
            api(fake, "sendMessage", json_body={"chat_id": chat, "text": str(i)})

    threads = [threading.Thread(target=send, args=(chat,)) for chat in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    calls = fake.calls()
    assert len(calls) == 200
    assert len({c["message_id"] for c in calls}) == 200
    assert fake.counts() == {str(chat): 25 for chat in range(8)}


def test_health_answers_ok(fake):
    status, body = call(fake, "/_health")
    assert status == 200 and body["ok"] is True


def test_unknown_control_path_is_404(fake):
    status, _ = call(fake, "/_nothing")
    assert status == 404


# -- fault injection -------------------------------------------------------------------------


def test_429_fault_carries_retry_after_and_is_used_up(fake):
    status, _ = call(
        fake,
        "/_faults",
        json_body={"method": "sendMessage", "status": 429, "retry_after": 3, "count": 2},
    )
    assert status == 200
    answers = [api(fake, "sendMessage", json_body={"chat_id": 9, "text": "t"}) for _ in range(3)]
    assert [s for s, _ in answers] == [429, 429, 200]
    assert answers[0][1] == {
        "ok": False,
        "error_code": 429,
        "description": "Too Many Requests: retry after 3",
        "parameters": {"retry_after": 3},
    }
    recorded = fake.calls(method="sendMessage")
    assert [c["status"] for c in recorded] == [429, 429, 200]
    assert [c["fault"] for c in recorded] == [True, True, False]
    assert fake.counts() == {"9": 1}


def test_403_fault_says_the_bot_was_blocked(fake):
    call(fake, "/_faults", json_body={"status": 403})
    status, body = api(fake, "sendPhoto", json_body={"chat_id": 1, "photo": "p"})
    assert status == 403
    assert body["description"] == "Forbidden: bot was blocked by the user"
    assert body["error_code"] == 403


@pytest.mark.parametrize("code", [500, 502])
def test_5xx_fault_answers_an_error_body(fake, code):
    call(fake, "/_faults", json_body={"method": "sendMessage", "status": code})
    status, body = api(fake, "sendMessage", json_body={"chat_id": 1, "text": "t"})
    assert status == code and body["ok"] is False and body["error_code"] == code


def test_fault_filters_by_method_and_chat(fake):
    call(fake, "/_faults", json_body={"method": "sendMessage", "status": 403, "chat_id": 123})
    assert api(fake, "sendPhoto", json_body={"chat_id": 123, "photo": "p"})[0] == 200
    assert api(fake, "sendMessage", json_body={"chat_id": 456, "text": "t"})[0] == 200
    assert api(fake, "sendMessage", json_body={"chat_id": 123, "text": "t"})[0] == 403
    assert api(fake, "sendMessage", json_body={"chat_id": 123, "text": "t"})[0] == 200


def test_delay_fault_makes_the_answer_slow_enough_to_time_out(fake):
    call(fake, "/_faults", json_body={"method": "sendMessage", "delay": 0.5, "status": None})
    started = time.monotonic()
    status, _ = api(fake, "sendMessage", json_body={"chat_id": 1, "text": "slow"})
    assert time.monotonic() - started >= 0.5
    assert status == 200
    request = urllib.request.Request(
        fake.base_url + f"/bot{TOKEN}/sendMessage",
        data=json.dumps({"chat_id": 1, "text": "t"}).encode(),
        headers={"Content-Type": "application/json"},
    )
    fake.add_fault(status=502, method="sendMessage", delay=1.0)
    with pytest.raises((TimeoutError, urllib.error.URLError)):
        urllib.request.urlopen(request, timeout=0.2)
    assert fake.held() == 1  # still held back: not in the record yet
    time.sleep(1.0)
    assert fake.held() == 0
    assert fake.calls(status=502)[0]["fault"] is True
    # The record says how long the answer was held, so a test can tell who timed out.
    assert fake.calls(status=502)[0]["delay"] == 1.0
    assert fake.calls(status=200)[0]["delay"] == 0.5
    slow = fake.calls(status=200)[0]
    assert slow["time"] - slow["received"] >= 0.5  # arrival is stamped before the delay


def test_faults_can_be_listed_and_dropped(fake):
    call(fake, "/_faults", json_body={"method": "sendMessage", "status": 500, "count": 5})
    _, faults = call(fake, "/_faults")
    assert faults[0]["count"] == 5 and faults[0]["method"] == "sendMessage"
    call(fake, "/_faults", method="DELETE")
    assert api(fake, "sendMessage", json_body={"chat_id": 1, "text": "t"})[0] == 200


def test_bad_fault_specs_are_rejected(fake):
    assert call(fake, "/_faults", json_body={"status": 200})[0] == 400
    assert call(fake, "/_faults", json_body={"status": 500, "count": 0})[0] == 400
    assert call(fake, "/_faults", json_body={"status": 500, "colour": "red"})[0] == 400
    assert fake.faults() == []
