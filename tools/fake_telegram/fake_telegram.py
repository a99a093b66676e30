#!/usr/bin/env python3
"""A fake Telegram Bot API that records every call, for tests, the lab and load runs.

Standard library only: the lab runs it on a bare Debian host (`tg1`) with nothing but python3.
It answers the methods a sales bot calls, shaped and validated like Telegram where that is
cheap, so the app's client code is exercised for real; every call is recorded (with the status it
got) so tests can count duplicates and losses; errors (429/403/5xx, slow answers) can be injected.

Run:    python3 fake_telegram.py --host 0.0.0.0 --port 8081
Import: fake = FakeTelegram(port=0).start(); fake.base_url; fake.calls(method="sendMessage");
        fake.stop()

HTTP surface (the contract in docs/contracts.md):
  POST|GET /bot<token>/<method>          Bot API call: JSON, form-urlencoded, multipart or query
  GET      /_calls?method=&token=&chat_id=&status=&since=   recorded calls, JSON list
  DELETE   /_calls                       forget calls, counts and faults
  GET      /_counts?method=&token=       {chat_id: successful sends} (sendMessage, sendPhoto, ..)
  POST     /_faults                      inject: {"method", "status", "retry_after", "count",
                                         "chat_id", "token", "delay", "description"}
  GET      /_faults, DELETE /_faults     list / drop pending faults
  POST     /_bots                        {"token": .., "username": ..} set getMe's username
  POST     /_updates                     {"token": .., "update": {..}} deliver to the bot's webhook
  GET      /_deliveries?token=           every delivery attempt (status, ok, error), JSON list
  GET      /_health                      {"ok": true, ...}
"""

from __future__ import annotations

import argparse
import email.parser
import email.policy
import json
import re
import threading
import time
from collections import deque
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlsplit

from webhook_delivery import Deliveries, WebhookRefused, check_certificate, check_url

MAX_TEXT = 4096
MAX_CAPTION = 1024
MAX_CALLBACK_DATA = 64
MAX_BODY = 60 * 1024 * 1024
SECRET_TOKEN_RE = re.compile(r"^[A-Za-z0-9_-]{1,256}$")

# Methods that deliver a message to a chat: counted per chat.
SEND_METHODS = (
    "sendMessage",
    "sendPhoto",
    "sendVideo",
    "sendDocument",
    "sendAnimation",
    "sendAudio",
)
MEDIA_FIELD = {
    "sendPhoto": "photo",
    "sendVideo": "video",
    "sendDocument": "document",
    "sendAnimation": "animation",
    "sendAudio": "audio",
}
OTHER_METHODS = (
    "answerCallbackQuery",
    "setWebhook",
    "deleteWebhook",
    "getWebhookInfo",
    "getMe",
    "editMessageReplyMarkup",
    "editMessageText",
    "deleteMessage",
    "sendChatAction",
)
# Telegram matches method names case-insensitively.
METHODS = {name.lower(): name for name in SEND_METHODS + OTHER_METHODS}


class ApiError(Exception):
    """An answer that is not ok: HTTP status plus Telegram's description."""

    def __init__(self, status: int, description: str, parameters: dict | None = None) -> None:
        super().__init__(description)
        self.status = status
        self.description = description
        self.parameters = parameters

    def body(self) -> dict[str, Any]:
        body: dict[str, Any] = {
            "ok": False,
            "error_code": self.status,
            "description": self.description,
        }
        if self.parameters:
            body["parameters"] = self.parameters
        return body


class Described:
    """A result that Telegram answers with a description too (setWebhook, deleteWebhook)."""

    def __init__(self, result: Any, description: str) -> None:
        self.result = result
        self.description = description


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    request_queue_size = 256


def bad_request(what: str) -> ApiError:
    return ApiError(400, f"Bad Request: {what}")


def bot_id_from_token(token: str) -> int:
    """Telegram tokens are '<bot id>:<secret>'; other shapes get a stable made-up id."""
    head = token.split(":", 1)[0]
    if head.isdigit():
        return int(head)
    return sum(ord(c) * 31**i for i, c in enumerate(head)) % 10**9 + 1


def chat_key(chat_id: Any) -> str | None:
    """Chat ids arrive as int, numeric string or '@channel': compare them as strings."""
    if chat_id is None or chat_id == "":
        return None
    return str(chat_id).strip()


def chat_value(chat_id: Any) -> int | str:
    text = str(chat_id).strip()
    try:
        return int(text)
    except ValueError:
        return text


def _maybe_json(value: Any) -> Any:
    """Form and query bodies carry nested objects (reply_markup) as JSON strings."""
    if isinstance(value, str) and value[:1] in "{[":
        try:
            return json.loads(value)
        except ValueError:
            return value
    return value


def parse_multipart(content_type: str, body: bytes) -> dict[str, Any]:
    """multipart/form-data (file uploads): fields as text, files as {filename, size}."""
    head = f"Content-Type: {content_type}\r\nMIME-Version: 1.0\r\n\r\n".encode()
    message = email.parser.BytesParser(policy=email.policy.HTTP).parsebytes(head + body)
    params: dict[str, Any] = {}
    if not message.is_multipart():
        return params
    for part in message.iter_parts():
        name = part.get_param("name", header="content-disposition")
        if not name:
            continue
        payload = part.get_payload(decode=True) or b""
        filename = part.get_filename()
        if filename:  # the bytes stay out of the recorded calls (_record drops "data")
            params[name] = {"filename": filename, "size": len(payload), "data": payload}
        else:
            params[name] = payload.decode("utf-8", "replace")
    return params


class FakeTelegram:
    """The fake API: an HTTP server in a thread plus the recorded state, safe across threads."""

    def __init__(
        self,
        host: str = "127.0.0.1",
        port: int = 0,
        usernames: dict[str, str] | None = None,
        max_calls: int = 500_000,
        verbose: bool = False,
        ca_file: str | None = None,
        allow_http_webhooks: bool = False,
        retry_delay: float = 1.0,
        connect_to: dict[str, str] | None = None,
    ) -> None:
        self._lock = threading.Lock()
        self._calls: deque[dict[str, Any]] = deque(maxlen=max_calls)
        self._seq = 0
        self._message_id = 0
        self._faults: list[dict[str, Any]] = []
        self._held = 0  # calls a delay fault is holding back right now
        self._counts: dict[tuple[str, str, str], int] = {}
        self._webhooks: dict[str, dict[str, Any]] = {}
        self._usernames: dict[str, str] = dict(usernames or {})
        self.verbose = verbose
        # Test-only: accept http:// webhooks (labs whose app has no TLS yet). Off by default.
        self.allow_http_webhooks = allow_http_webhooks
        self.deliveries = Deliveries(self.webhook, ca_file, retry_delay, connect_to=connect_to)
        self._server = _Server((host, port), _make_handler(self))
        self._thread: threading.Thread | None = None

    # -- lifecycle ---------------------------------------------------------------------------
    @property
    def host(self) -> str:
        return self._server.server_address[0]

    @property
    def port(self) -> int:
        return self._server.server_address[1]

    @property
    def base_url(self) -> str:
        """What the app's TELEGRAM_API_BASE should be (no trailing slash)."""
        host = self.host if self.host not in ("0.0.0.0", "") else "127.0.0.1"
        return f"http://{host}:{self.port}"

    def start(self) -> FakeTelegram:
        """Serve in a daemon thread; returns self so `FakeTelegram().start()` reads well."""
        self._thread = threading.Thread(
            target=self._server.serve_forever,
            kwargs={"poll_interval": 0.05},  # so stop() returns quickly in tests
            name="fake-telegram",
            daemon=True,
        )
        self._thread.start()
        return self

    def serve_forever(self) -> None:
        self._server.serve_forever()

    def stop(self) -> None:
        """Stop serving and free the port; safe to call on a server that never started."""
        self.deliveries.stop()
        if self._thread is not None:
            self._server.shutdown()  # waits for serve_forever: only when it runs
            self._thread.join(timeout=5)
            self._thread = None
        self._server.server_close()

    def __enter__(self) -> FakeTelegram:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # -- what tests read and set -------------------------------------------------------------
    def calls(
        self,
        method: str | None = None,
        token: str | None = None,
        chat_id: Any = None,
        status: int | None = None,
        since: int = 0,
    ) -> list[dict[str, Any]]:
        """Recorded calls in arrival order, optionally filtered (all filters are ANDed)."""
        want_method = method.lower() if method else None
        want_chat = chat_key(chat_id)
        with self._lock:
            snapshot = list(self._calls)
        return [
            call
            for call in snapshot
            if (want_method is None or call["method"].lower() == want_method)
            and (token is None or call["token"] == token)
            and (want_chat is None or call["chat_key"] == want_chat)
            and (status is None or call["status"] == status)
            and call["seq"] > since
        ]

    def sent(self, method: str | None = None, token: str | None = None, chat_id: Any = None):
        """Only the calls Telegram would have delivered (status 200)."""
        return self.calls(method=method, token=token, chat_id=chat_id, status=200)

    def counts(self, method: str | None = None, token: str | None = None) -> dict[str, int]:
        """Successful sends per chat id: {"123": 2}. Exact even when old calls rotated out."""
        want_method = METHODS.get(method.lower(), method) if method else None
        totals: dict[str, int] = {}
        with self._lock:
            items = list(self._counts.items())
        for (tok, chat, meth), n in items:
            if (token is None or tok == token) and (want_method is None or meth == want_method):
                totals[chat] = totals.get(chat, 0) + n
        return totals

    def clear(self) -> None:
        """Forget calls, counts and faults (webhooks and usernames stay)."""
        with self._lock:
            self._calls.clear()
            self._counts.clear()
            self._faults.clear()

    def add_fault(
        self,
        status: int | None = 500,
        method: str | None = None,
        count: int = 1,
        retry_after: int = 1,
        chat_id: Any = None,
        token: str | None = None,
        delay: float = 0.0,
        description: str | None = None,
    ) -> dict[str, Any]:
        """Make the next `count` matching calls fail with `status` (None: only `delay`)."""
        if status is not None and not 400 <= int(status) <= 599:
            raise ValueError("status must be a 4xx/5xx code, or None for a delay-only fault")
        if int(count) < 1:
            raise ValueError("count must be at least 1")
        fault = {
            "method": METHODS.get(method.lower(), method) if method else None,
            "status": int(status) if status is not None else None,
            "count": int(count),
            "retry_after": int(retry_after),
            "chat_id": chat_key(chat_id),
            "token": token,
            "delay": float(delay),
            "description": description,
        }
        with self._lock:
            self._faults.append(fault)
        return dict(fault)

    def held(self) -> int:
        """Calls a delay fault is still holding (not recorded yet): wait for 0 before counting."""
        with self._lock:
            return self._held

    def faults(self) -> list[dict[str, Any]]:
        with self._lock:
            return [dict(f) for f in self._faults]

    def clear_faults(self) -> None:
        with self._lock:
            self._faults.clear()

    def set_username(self, token: str, username: str) -> None:
        with self._lock:
            self._usernames[token] = username

    def username(self, token: str) -> str:
        with self._lock:
            name = self._usernames.get(token)
        return name or f"test{bot_id_from_token(token)}_bot"

    def webhook(self, token: str) -> dict[str, Any] | None:
        with self._lock:
            hook = self._webhooks.get(token)
            return dict(hook) if hook else None

    def push_update(self, token: str, update: dict[str, Any]) -> int:
        """Deliver an update to the bot's webhook as Telegram does (HTTPS, verified, retried)."""
        return self.deliveries.push(token, update)

    # -- the API -----------------------------------------------------------------------------
    def handle(self, token: str, method_raw: str, params: dict[str, Any]) -> tuple[int, dict]:
        """Answer one Bot API call and record it. Returns (HTTP status, JSON body)."""
        received = time.time()
        method = METHODS.get(method_raw.lower())
        fault = self._take_fault(method or method_raw, token, params.get("chat_id"))
        if fault and fault["delay"] > 0:
            with self._lock:
                self._held += 1
            try:
                time.sleep(fault["delay"])
            finally:
                with self._lock:
                    self._held -= 1
        message_id = None
        if method is None:
            status, body = 404, {"ok": False, "error_code": 404, "description": "Not Found"}
        elif fault and fault["status"] is not None:
            error = self._fault_error(fault)
            status, body = error.status, error.body()
        else:
            try:
                result = getattr(self, "_m_" + method)(token, params)
            except ApiError as error:
                status, body = error.status, error.body()
            else:
                status, body = 200, {"ok": True}
                if isinstance(result, Described):
                    body["result"], body["description"] = result.result, result.description
                else:
                    body["result"] = result
                if isinstance(result, dict):
                    message_id = result.get("message_id")
        self._record(token, method or method_raw, params, status, body, message_id, fault, received)
        return status, body

    def _take_fault(self, method: str, token: str, chat_id: Any) -> dict[str, Any] | None:
        chat = chat_key(chat_id)
        with self._lock:
            for fault in self._faults:
                if fault["method"] and fault["method"].lower() != method.lower():
                    continue
                if fault["chat_id"] is not None and fault["chat_id"] != chat:
                    continue
                if fault["token"] is not None and fault["token"] != token:
                    continue
                fault["count"] -= 1
                if fault["count"] <= 0:
                    self._faults.remove(fault)
                return dict(fault)
        return None

    @staticmethod
    def _fault_error(fault: dict[str, Any]) -> ApiError:
        status = fault["status"]
        if status == 429:
            after = fault["retry_after"]
            return ApiError(
                429,
                fault["description"] or f"Too Many Requests: retry after {after}",
                {"retry_after": after},
            )
        defaults = {
            400: "Bad Request: injected fault",
            401: "Unauthorized",
            403: "Forbidden: bot was blocked by the user",
            404: "Not Found",
            500: "Internal Server Error",
            502: "Bad Gateway",
            503: "Service Unavailable",
            504: "Gateway Timeout",
        }
        return ApiError(status, fault["description"] or defaults.get(status, "Injected error"))

    def _record(
        self, token, method, params, status, body, message_id, fault, received=None
    ) -> None:
        chat = chat_key(params.get("chat_id"))
        params = {
            k: {f: x for f, x in v.items() if f != "data"} if isinstance(v, dict) else v
            for k, v in params.items()
        }
        with self._lock:
            self._seq += 1
            self._calls.append(
                {
                    "seq": self._seq,
                    "time": time.time(),
                    # When the request arrived (before any injected delay): rate limits are
                    # measured on this, as Telegram counts what reaches it.
                    "received": received if received is not None else time.time(),
                    "token": token,
                    "method": method,
                    "params": params,
                    "chat_id": chat_value(chat) if chat is not None else None,
                    "chat_key": chat,
                    "text": params.get("text"),
                    "caption": params.get("caption"),
                    "reply_markup": params.get("reply_markup"),
                    "status": status,
                    "ok": status == 200,
                    "message_id": message_id,
                    "fault": bool(fault and fault["status"] is not None),
                    # Seconds an injected fault held the answer back (a client may have timed out).
                    "delay": float(fault["delay"]) if fault else 0.0,
                    "description": body.get("description"),
                }
            )
            if status == 200 and method in SEND_METHODS and chat is not None:
                key = (token, chat, method)
                self._counts[key] = self._counts.get(key, 0) + 1

    # -- validation helpers ------------------------------------------------------------------
    @staticmethod
    def _require_chat(params: dict[str, Any]) -> int | str:
        chat = chat_key(params.get("chat_id"))
        if chat is None:
            raise bad_request("chat_id is empty")
        return chat_value(chat)

    @staticmethod
    def _check_markup(params: dict[str, Any]) -> Any:
        markup = params.get("reply_markup")
        if markup is None or markup == "":
            return None
        if isinstance(markup, str):
            try:
                markup = json.loads(markup)
            except ValueError:
                raise bad_request("can't parse reply keyboard markup JSON object") from None
            params["reply_markup"] = markup
        if not isinstance(markup, dict):
            raise bad_request("can't parse reply keyboard markup JSON object")
        keyboard = markup.get("inline_keyboard")
        if keyboard is None:
            return markup
        if not isinstance(keyboard, list) or not all(isinstance(r, list) for r in keyboard):
            raise bad_request(
                'field "inline_keyboard" of the InlineKeyboardMarkup must be an Array'
            )
        for row in keyboard:
            for button in row:
                if not isinstance(button, dict) or not button.get("text"):
                    raise bad_request("can't parse inline keyboard button: Text must be non-empty")
                data = button.get("callback_data")
                if data is not None and len(str(data).encode("utf-8")) > MAX_CALLBACK_DATA:
                    raise bad_request("BUTTON_DATA_INVALID")
                if data is None and not any(
                    k in button for k in ("url", "web_app", "pay", "switch_inline_query")
                ):
                    raise bad_request(
                        "can't parse inline keyboard button: "
                        "InlineKeyboardButton must have exactly one optional field"
                    )
        return markup

    def _new_message(self, token: str, chat: int | str, **fields: Any) -> dict[str, Any]:
        with self._lock:
            self._message_id += 1
            message_id = self._message_id
        chat_obj: dict[str, Any] = {"id": chat, "type": "private"}
        if isinstance(chat, str):
            chat_obj = {
                "id": -1000000000000 - bot_id_from_token(chat),
                "type": "channel",
                "username": chat.lstrip("@"),
            }
        message = {
            "message_id": message_id,
            "from": self._bot_user(token),
            "chat": chat_obj,
            "date": int(time.time()),
        }
        message.update({k: v for k, v in fields.items() if v is not None})
        return message

    def _bot_user(self, token: str) -> dict[str, Any]:
        return {
            "id": bot_id_from_token(token),
            "is_bot": True,
            "first_name": "GrimBots Test",
            "username": self.username(token),
        }

    # -- methods -----------------------------------------------------------------------------
    def _m_sendMessage(self, token: str, params: dict[str, Any]) -> dict[str, Any]:
        chat = self._require_chat(params)
        text = params.get("text")
        if text is None or str(text).strip() == "":
            raise bad_request("message text is empty")
        text = str(text)
        if len(text) > MAX_TEXT:
            raise bad_request("message is too long")
        markup = self._check_markup(params)
        return self._new_message(token, chat, text=text, reply_markup=markup)

    def _send_media(self, method: str, token: str, params: dict[str, Any]) -> dict[str, Any]:
        chat = self._require_chat(params)
        field = MEDIA_FIELD[method]
        media = params.get(field)
        if media is None or media == "":
            raise bad_request(f"there is no {field} in the request")
        caption = params.get("caption")
        if caption is not None and len(str(caption)) > MAX_CAPTION:
            raise bad_request("message caption is too long")
        markup = self._check_markup(params)
        file_id = media if isinstance(media, str) else f"upload-{media.get('filename', 'file')}"
        file_obj: Any = {"file_id": file_id, "file_unique_id": f"u{abs(hash(file_id)) % 10**8}"}
        if field == "photo":
            file_obj = [dict(file_obj, width=1280, height=720)]
        return self._new_message(
            token,
            chat,
            caption=str(caption) if caption is not None else None,
            reply_markup=markup,
            **{field: file_obj},
        )

    def _m_sendPhoto(self, token, params):
        return self._send_media("sendPhoto", token, params)

    def _m_sendVideo(self, token, params):
        return self._send_media("sendVideo", token, params)

    def _m_sendDocument(self, token, params):
        return self._send_media("sendDocument", token, params)

    def _m_sendAnimation(self, token, params):
        return self._send_media("sendAnimation", token, params)

    def _m_sendAudio(self, token, params):
        return self._send_media("sendAudio", token, params)

    def _m_answerCallbackQuery(self, token: str, params: dict[str, Any]) -> bool:
        if not params.get("callback_query_id"):
            raise bad_request(
                "query is too old and response timeout expired or query ID is invalid"
            )
        text = params.get("text")
        if text is not None and len(str(text)) > 200:
            raise bad_request("MESSAGE_TOO_LONG")
        return True

    def _m_editMessageReplyMarkup(self, token: str, params: dict[str, Any]) -> Any:
        markup = self._check_markup(params)
        if params.get("inline_message_id"):
            return True
        chat = self._require_chat(params)
        if not params.get("message_id"):
            raise bad_request("message identifier is not specified")
        message = self._new_message(token, chat, reply_markup=markup, text="(edited)")
        message["message_id"] = int(params["message_id"])
        message["edit_date"] = message["date"]
        return message

    def _m_editMessageText(self, token: str, params: dict[str, Any]) -> Any:
        text = params.get("text")
        if text is None or str(text).strip() == "":
            raise bad_request("message text is empty")
        if len(str(text)) > MAX_TEXT:
            raise bad_request("MESSAGE_TOO_LONG")
        markup = self._check_markup(params)
        if params.get("inline_message_id"):
            return True
        chat = self._require_chat(params)
        if not params.get("message_id"):
            raise bad_request("message identifier is not specified")
        message = self._new_message(token, chat, text=str(text), reply_markup=markup)
        message["message_id"] = int(params["message_id"])
        message["edit_date"] = message["date"]
        return message

    def _m_deleteMessage(self, token: str, params: dict[str, Any]) -> bool:
        self._require_chat(params)
        if not params.get("message_id"):
            raise bad_request("message identifier is not specified")
        return True

    def _m_sendChatAction(self, token: str, params: dict[str, Any]) -> bool:
        self._require_chat(params)
        if not params.get("action"):
            raise bad_request("action is empty")
        return True

    def _m_setWebhook(self, token: str, params: dict[str, Any]) -> Described:
        url = str(params.get("url") or "")
        secret = params.get("secret_token")
        certificate = None
        try:
            if url:
                check_url(url, self.allow_http_webhooks)
            upload = params.get("certificate")
            if upload not in (None, ""):
                if not isinstance(upload, dict):  # Telegram takes an upload only, no file_id
                    raise WebhookRefused("bad webhook: Failed to set custom certificate file")
                certificate = check_certificate(upload.get("data") or b"")
        except WebhookRefused as exc:
            raise bad_request(str(exc)) from None
        if secret is not None and secret != "" and not SECRET_TOKEN_RE.match(str(secret)):
            raise bad_request("secret token contains unallowed characters")
        with self._lock:
            if url:
                self._webhooks[token] = {
                    "url": url,
                    "secret_token": secret or None,
                    "allowed_updates": _maybe_json(params.get("allowed_updates")),
                    "max_connections": int(params.get("max_connections") or 40),
                    "set_at": int(time.time()),
                    # The uploaded certificate, then the only one trusted for this webhook.
                    "certificate": certificate,
                }
            else:
                self._webhooks.pop(token, None)
        if str(params.get("drop_pending_updates")).lower() == "true":
            self.deliveries.forget(token)
        return Described(True, "Webhook was set" if url else "Webhook was deleted")

    def _m_deleteWebhook(self, token: str, params: dict[str, Any]) -> Described:
        with self._lock:
            existed = self._webhooks.pop(token, None) is not None
        if str(params.get("drop_pending_updates")).lower() == "true":
            self.deliveries.forget(token)
        return Described(True, "Webhook was deleted" if existed else "Webhook is already deleted")

    def _m_getWebhookInfo(self, token: str, params: dict[str, Any]) -> dict[str, Any]:
        hook = self.webhook(token) or {}
        info: dict[str, Any] = {
            "url": hook.get("url", ""),
            "has_custom_certificate": bool(hook.get("certificate")),
            "pending_update_count": self.deliveries.pending(token),
        }
        error = self.deliveries.last_error(token)
        if error:
            info["last_error_date"], info["last_error_message"] = error
        if hook:
            info["max_connections"] = hook["max_connections"]
            if hook.get("allowed_updates"):
                info["allowed_updates"] = hook["allowed_updates"]
        return info

    def _m_getMe(self, token: str, params: dict[str, Any]) -> dict[str, Any]:
        return dict(
            self._bot_user(token),
            can_join_groups=True,
            can_read_all_group_messages=False,
            supports_inline_queries=False,
        )


def _make_handler(fake: FakeTelegram) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"
        server_version = "FakeTelegram/1.0"

        def log_message(self, fmt: str, *args: Any) -> None:
            if fake.verbose:
                super().log_message(fmt, *args)

        def do_GET(self) -> None:
            self._dispatch("GET")

        def do_POST(self) -> None:
            self._dispatch("POST")

        def do_DELETE(self) -> None:
            self._dispatch("DELETE")

        # -- plumbing ----------------------------------------------------------------------
        def _send(self, status: int, body: Any) -> None:
            data = json.dumps(body, ensure_ascii=False).encode("utf-8")
            try:
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)
            except (BrokenPipeError, ConnectionResetError):
                self.close_connection = True  # the client gave up (a timeout test)

        def _body(self) -> bytes:
            length = int(self.headers.get("Content-Length") or 0)
            if length > MAX_BODY:
                raise ApiError(413, "Request Entity Too Large")
            return self.rfile.read(length) if length > 0 else b""

        def _params(self, query: str) -> dict[str, Any]:
            params: dict[str, Any] = {k: v[-1] for k, v in parse_qs(query).items()}
            body = self._body()
            ctype = self.headers.get("Content-Type", "")
            if body:
                if "json" in ctype or (not ctype and body[:1] in b"{["):
                    try:
                        data = json.loads(body)
                    except ValueError:
                        raise bad_request("can't parse JSON object") from None
                    if not isinstance(data, dict):
                        raise bad_request("can't parse JSON object")
                    params.update(data)
                elif ctype.startswith("multipart/form-data"):
                    params.update(parse_multipart(ctype, body))
                else:
                    text = body.decode("utf-8", "replace")
                    params.update({k: v[-1] for k, v in parse_qs(text).items()})
            for key in ("reply_markup", "allowed_updates", "entities", "caption_entities"):
                if key in params:
                    params[key] = _maybe_json(params[key])
            return params

        def _dispatch(self, verb: str) -> None:
            url = urlsplit(self.path)
            path = url.path
            try:
                if path.startswith("/bot"):
                    token, sep, method = path[4:].partition("/")
                    if not token or not sep or not method or "/" in method:
                        self._send(
                            404, {"ok": False, "error_code": 404, "description": "Not Found"}
                        )
                        return
                    if verb not in ("GET", "POST"):
                        self._send(
                            405,
                            {"ok": False, "error_code": 405, "description": "Method Not Allowed"},
                        )
                        return
                    status, body = fake.handle(token, method, self._params(url.query))
                    self._send(status, body)
                    return
                self._control(verb, path, url.query)
            except ApiError as error:
                self._send(error.status, error.body())

        def _control(self, verb: str, path: str, query: str) -> None:
            q = {k: v[-1] for k, v in parse_qs(query).items()}
            if path == "/_health" and verb == "GET":
                self._send(200, {"ok": True, "calls": len(fake.calls()), "held": fake.held()})
            elif path == "/_calls" and verb == "GET":
                status = q.get("status")
                calls = fake.calls(
                    method=q.get("method") or None,
                    token=q.get("token") or None,
                    chat_id=q.get("chat_id") or None,
                    status=int(status) if status and status.isdigit() else None,
                    since=int(q["since"]) if q.get("since", "").isdigit() else 0,
                )
                self._send(200, calls)
            elif path == "/_calls" and verb == "DELETE":
                self._body()
                fake.clear()
                self._send(200, {"ok": True})
            elif path == "/_counts" and verb == "GET":
                self._send(
                    200, fake.counts(method=q.get("method") or None, token=q.get("token") or None)
                )
            elif path == "/_faults" and verb == "POST":
                spec = self._json_body()
                allowed = {
                    "method",
                    "status",
                    "count",
                    "retry_after",
                    "chat_id",
                    "token",
                    "delay",
                    "description",
                }
                unknown = set(spec) - allowed
                if unknown:
                    raise bad_request(f"unknown fault fields: {', '.join(sorted(unknown))}")
                try:
                    fault = fake.add_fault(**spec)
                except (TypeError, ValueError) as exc:
                    raise bad_request(str(exc)) from None
                self._send(200, {"ok": True, "fault": fault})
            elif path == "/_faults" and verb == "GET":
                self._send(200, fake.faults())
            elif path == "/_faults" and verb == "DELETE":
                self._body()
                fake.clear_faults()
                self._send(200, {"ok": True})
            elif path == "/_updates" and verb == "POST":
                spec = self._json_body()
                if not spec.get("token") or not isinstance(spec.get("update"), dict):
                    raise bad_request("token and update (an object) are required")
                update_id = fake.push_update(str(spec["token"]), spec["update"])
                self._send(200, {"ok": True, "update_id": update_id})
            elif path == "/_deliveries" and verb == "GET":
                self._send(200, fake.deliveries.attempts(q.get("token") or None))
            elif path == "/_bots" and verb == "POST":
                spec = self._json_body()
                if not spec.get("token") or not spec.get("username"):
                    raise bad_request("token and username are required")
                fake.set_username(str(spec["token"]), str(spec["username"]))
                self._send(200, {"ok": True})
            else:
                self._body()
                self._send(404, {"ok": False, "error_code": 404, "description": "Not Found"})

        def _json_body(self) -> dict[str, Any]:
            try:
                spec = json.loads(self._body() or b"{}")
            except ValueError:
                raise bad_request("body must be a JSON object") from None
            if not isinstance(spec, dict):
                raise bad_request("body must be a JSON object")
            return spec

    return Handler


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="Fake Telegram Bot API that records calls.")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8081)
    parser.add_argument(
        "--username",
        action="append",
        default=[],
        metavar="TOKEN=NAME",
        help="getMe username for a token (repeatable)",
    )
    parser.add_argument(
        "--max-calls",
        type=int,
        default=500_000,
        help="calls kept in memory (oldest dropped; counts stay exact)",
    )
    parser.add_argument("--verbose", action="store_true", help="log every request")
    parser.add_argument(
        "--ca-file",
        default=None,
        help="CA bundle webhook certificates are verified against (default: the system's)",
    )
    parser.add_argument(
        "--allow-http-webhooks",
        action="store_true",
        help="TEST ONLY: accept http:// webhook URLs on any port (Telegram never does)",
    )
    parser.add_argument(
        "--retry-delay",
        type=float,
        default=1.0,
        help="first pause before a failed delivery is retried",
    )
    args = parser.parse_args(argv)
    usernames = dict(item.split("=", 1) for item in args.username if "=" in item)
    fake = FakeTelegram(
        args.host,
        args.port,
        usernames,
        args.max_calls,
        args.verbose,
        args.ca_file,
        args.allow_http_webhooks,
        args.retry_delay,
    )
    print(f"fake Telegram Bot API listening on {fake.base_url}", flush=True)
    try:
        fake.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        fake._server.server_close()


if __name__ == "__main__":
    main()
