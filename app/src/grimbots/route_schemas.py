"""Schemas of the routes outside the admin API: what the OpenAPI document says they take and give.

The Telegram webhook checks its updates with its own fast code (intake.py, webhook.py) and the
payment webhook through its gateway adapter: these models only describe those bodies, for
callers and for the fuzzing suite. They accept every field they do not name, as the routes do.
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field
from pydantic.fields import FieldInfo

INT64_MAX = 2**63 - 1
INT32_MAX = 2**31 - 1


def _no_default(schema: dict) -> None:
    schema.pop("default", None)


def optional(**constraints) -> FieldInfo:
    """A field that may be absent but not null: None stands for absent and is never validated
    (the caller's null is refused by the field's type), nor shown as a default."""
    return Field(None, json_schema_extra=_no_default, **constraints)


class Open(BaseModel):
    """An object whose unnamed fields are accepted and ignored."""

    model_config = ConfigDict(extra="allow")


class Error(Open):
    ok: Literal[False]
    error: str
    field: str = optional(description="the field at fault, when there is one")
    fields: list[str] = optional(description="the unknown or missing fields")


class Ok(Open):
    ok: bool
    duplicate: Literal["update_id", "message_hash", "start_lock"] = optional()


class TelegramUser(Open):
    id: int
    is_bot: bool = optional()
    first_name: str = optional()
    last_name: str = optional()
    username: str = optional()
    language_code: str = optional()


class TelegramChat(Open):
    id: int
    type: str = optional()
    username: str = optional()


class TelegramMessage(Open):
    message_id: int = optional()
    date: int = optional()
    chat: TelegramChat
    from_: TelegramUser = optional(alias="from")
    text: str = optional(max_length=4096)
    caption: str = optional()
    photo: list[dict] = optional()


class TelegramCallbackQuery(Open):
    id: str
    from_: TelegramUser = Field(alias="from")
    data: str = optional(max_length=64)
    chat_instance: str = optional()
    message: TelegramMessage = optional()


class TelegramChatMember(Open):
    status: str
    user: TelegramUser = optional()


class TelegramChatMemberUpdated(Open):
    chat: TelegramChat
    from_: TelegramUser = Field(alias="from")
    date: int = optional()
    new_chat_member: TelegramChatMember = optional()


class TelegramUpdate(Open):
    """One Telegram update (https://core.telegram.org/bots/api#update). Types the app does not
    handle, and fields it does not read, are accepted and ignored."""

    update_id: int = Field(ge=0, le=INT64_MAX)
    message: TelegramMessage = optional()
    edited_message: TelegramMessage = optional()
    channel_post: TelegramMessage = optional()
    edited_channel_post: TelegramMessage = optional()
    callback_query: TelegramCallbackQuery = optional()
    my_chat_member: TelegramChatMemberUpdated = optional()
    chat_member: TelegramChatMemberUpdated = optional()


class PaymentEvent(Open):
    event: str = optional()
    txid: str = Field(pattern=r"^[A-Za-z0-9]{1,100}$")
    status: Literal["paid", "expired"]
    amount_cents: int = Field(ge=1, le=INT32_MAX)
    occurred_at: str = optional()


class PaymentResult(Open):
    ok: bool
    duplicate: bool
    status: Literal["paid", "expired"] = optional()


class HealthCheck(Open):
    ok: bool


class Health(Open):
    status: Literal["ok", "fail"]
    checks: dict[str, HealthCheck]
    # /health, with the detail (loopback or the health token): the release this node runs.
    version: str = optional()


class Click(BaseModel):
    """The ad's attribution, recorded with the click (each cut to its column's length)."""

    utm_source: str = optional()
    utm_medium: str = optional()
    utm_campaign: str = optional()
    utm_content: str = optional()
    utm_term: str = optional()
    fbclid: str = optional()


class Stats(Open):
    """clicks, leads, sales, revenue_cents, conversion, and the same by utm_source /
    utm_campaign"""


class Deleted(BaseModel):
    ok: Literal[True]
    id: int
    deleted: Literal[True]
