"""What a Telegram update must look like before the webhook takes it.

Telegram only sends well-formed updates; anything else is a forged or broken request. The
fields the workers read (ids, chat, sender, text, callback data, member status) are checked for
type here, so a malformed update is refused with a 400 at the door instead of failing in a
worker (or, worse, being retried there for days). Unknown update types and unknown fields pass:
Telegram adds both over time.
"""

from __future__ import annotations

from typing import Any

from grimbots import jsonbody

UPDATE_KINDS = (
    "message",
    "edited_message",
    "callback_query",
    "my_chat_member",
    "channel_post",
    "edited_channel_post",
    "chat_member",
    "chat_join_request",
    "inline_query",
    "pre_checkout_query",
)
# Every update type newer than this list is counted and stored under one name.
OTHER_KIND = "other"

# shape name -> {field: (type or shape, required)}; "int" is a 64-bit integer, never a boolean.
_SHAPES: dict[str, dict[str, tuple[str, bool]]] = {
    "user": {
        "id": ("int", True),
        "first_name": ("str", False),
        "last_name": ("str", False),
        "username": ("str", False),
        "is_bot": ("bool", False),
        "language_code": ("str", False),
    },
    "chat": {"id": ("int", True), "type": ("str", False), "username": ("str", False)},
    "message": {
        "message_id": ("int", False),
        "date": ("int", False),
        "chat": ("chat", True),
        "from": ("user", False),
        "text": ("str", False),
        "caption": ("str", False),
        "photo": ("list", False),
    },
    "callback_query": {
        "id": ("str", True),
        "from": ("user", True),
        "data": ("str", False),
        "message": ("message", False),
    },
    "chat_member": {"status": ("str", True), "user": ("user", False)},
    "chat_member_updated": {
        "chat": ("chat", True),
        "from": ("user", True),
        "new_chat_member": ("chat_member", False),
        "old_chat_member": ("chat_member", False),
    },
    "object": {},
}
_KIND_SHAPES = {
    "message": "message",
    "edited_message": "message",
    "channel_post": "message",
    "edited_channel_post": "message",
    "callback_query": "callback_query",
    "my_chat_member": "chat_member_updated",
    "chat_member": "chat_member_updated",
}


class InvalidUpdate(ValueError):
    """The body is not a Telegram update; the message names the field and is safe to show."""


def _is_int(value: Any) -> bool:
    return type(value) is int


def _check(value: Any, shape: str, where: str) -> None:
    if not isinstance(value, dict):
        raise InvalidUpdate(f"{where} must be an object")
    for field, (kind, required) in _SHAPES[shape].items():
        if field not in value:
            if required:
                raise InvalidUpdate(f"{where}.{field} is required")
            continue
        item, path = value[field], f"{where}.{field}"
        if kind == "int":
            if not _is_int(item):
                raise InvalidUpdate(f"{path} must be an integer")
        elif kind == "str":
            if not isinstance(item, str):
                raise InvalidUpdate(f"{path} must be a string")
        elif kind == "bool":
            if not isinstance(item, bool):
                raise InvalidUpdate(f"{path} must be true or false")
        elif kind == "list":
            if not isinstance(item, list):
                raise InvalidUpdate(f"{path} must be a list")
        else:
            _check(item, kind, path)


def parse_update(raw: bytes) -> dict:
    """The update in `raw`, checked; InvalidUpdate (a 400) for anything Telegram would not send."""
    try:
        update = jsonbody.loads(raw)
    except jsonbody.BadJson as exc:
        raise InvalidUpdate(str(exc)) from None
    if not isinstance(update, dict):
        raise InvalidUpdate("an update is a JSON object")
    update_id = update.get("update_id")
    if not _is_int(update_id) or update_id < 0:
        raise InvalidUpdate("update_id must be a non-negative integer")
    for kind in UPDATE_KINDS:
        if kind in update:
            _check(update[kind], _KIND_SHAPES.get(kind, "object"), kind)
    return update


def update_kind(update: dict) -> str:
    """The update's type: one of UPDATE_KINDS, else "other" (a fixed set, safe as a label)."""
    for kind in UPDATE_KINDS:
        if kind in update:
            return kind
    # Types newer than this code are acknowledged, never an error.
    return OTHER_KIND


def is_start(text: object) -> bool:
    if not isinstance(text, str):
        return False
    command = text.split(maxsplit=1)[0] if text.strip() else ""
    return command == "/start" or command.startswith("/start@")
