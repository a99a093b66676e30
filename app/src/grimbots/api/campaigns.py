"""/api/campaigns: remarketing broadcasts to a bot's leads, sent in batches on `marathon`."""

from __future__ import annotations

import contextlib
import logging
from datetime import UTC, datetime
from typing import Literal

from flask import g, jsonify
from pydantic import BaseModel
from sqlalchemy import select
from sqlalchemy.orm import Session

from grimbots import campaigns as campaign_jobs
from grimbots.api.common import (
    CONFLICT,
    MAX_ID,
    MAX_TEXT,
    Id,
    Input,
    MediaType,
    Page,
    QueryInt,
    bad,
    bp,
    link,
    media,
    operation,
    owned,
    page_of,
    paged,
    query,
    text,
    ts,
    write,
)
from grimbots.api.common import body as read_body
from grimbots.db import get_db
from grimbots.errors import ApiError, where
from grimbots.models import Bot, Campaign
from grimbots.openapi import Answer
from grimbots.route_schemas import Error, optional

log = logging.getLogger(__name__)

MAX_BUTTONS = 10
Audience = Literal["all", "paid", "unpaid"]
QUEUE_DOWN = Answer("the job queue is unavailable; retry", Error)
Name = text(200)
Message = text(MAX_TEXT, min_len=0)
MediaUrl = text(2048, min_len=0)
ButtonText = text(64)
ButtonUrl = link()


class Button(Input):
    text: ButtonText
    url: ButtonUrl


class CampaignWrite(Input):
    bot_id: Id
    name: Name
    text: Message = ""
    media_type: MediaType | None = None
    media_url: MediaUrl | None = None
    buttons: list[Button] = optional(max_length=MAX_BUTTONS)
    audience: Audience = "all"


class CampaignList(Page):
    bot_id: QueryInt = optional(ge=1, le=MAX_ID)


class Progress(BaseModel):
    total: int
    processed: int
    sent: int
    failed: int
    skipped_blocked: int
    percent: float


class CampaignOut(BaseModel):
    id: int
    bot_id: int
    name: str
    text: str
    media_type: str | None
    media_url: str | None
    buttons: list[dict]
    audience: str
    status: Literal["draft", "running", "stopped", "finished"]
    stop_requested: bool
    progress: Progress
    created_at: datetime | None
    started_at: datetime | None
    finished_at: datetime | None


class CampaignResumed(CampaignOut):
    requeued: bool


def campaign_json(campaign: Campaign) -> dict:
    processed = campaign.sent + campaign.failed + campaign.skipped_blocked
    return {
        "id": campaign.id,
        "bot_id": campaign.bot_id,
        "name": campaign.name,
        "text": campaign.text,
        "media_type": campaign.media_type,
        "media_url": campaign.media_url,
        "buttons": campaign.buttons or [],
        "audience": campaign.audience,
        "status": campaign.status,
        "stop_requested": campaign.stop_requested,
        "progress": {
            "total": campaign.total,
            "processed": processed,
            "sent": campaign.sent,
            "failed": campaign.failed,
            "skipped_blocked": campaign.skipped_blocked,
            "percent": round(100 * processed / campaign.total, 1) if campaign.total else 0.0,
        },
        "created_at": ts(campaign.created_at),
        "started_at": ts(campaign.started_at),
        "finished_at": ts(campaign.finished_at),
    }


@bp.get("/campaigns")
@operation(
    "List the seller's campaigns, newest first",
    (200, "a page", page_of(CampaignOut)),
    query=CampaignList,
)
def list_campaigns():
    args = query(CampaignList)
    with get_db().read_session() as session:
        rows = select(Campaign).where(Campaign.seller_id == g.seller_id)
        if "bot_id" in args.model_fields_set:
            rows = rows.where(Campaign.bot_id == args.bot_id)
        return jsonify(paged(session, rows.order_by(Campaign.id.desc()), campaign_json, args))


@bp.post("/campaigns")
@operation(
    "Create a campaign (draft)",
    (201, "created", CampaignOut),
    body=CampaignWrite,
    conflict=CONFLICT,
)
def create_campaign():
    data = read_body(CampaignWrite)
    media_type, media_url = media(data.media_type, data.media_url, "media")
    if not data.text and not media_type:
        raise bad("text", "a campaign needs a text or a media")
    buttons = [button.model_dump() for button in data.buttons or []]

    def fn(session: Session) -> dict:
        bot = owned(session, Bot, data.bot_id, field="bot_id")
        campaign = Campaign(
            seller_id=g.seller_id,
            bot_id=bot.id,
            name=data.name,
            text=data.text,
            media_type=media_type,
            media_url=media_url,
            buttons=buttons,
            audience=data.audience,
            status="draft",
            stop_requested=False,
            cursor=0,
            total=0,
            sent=0,
            failed=0,
            skipped_blocked=0,
        )
        session.add(campaign)
        session.flush()
        return campaign_json(campaign)

    return jsonify(write(fn)), 201


@bp.get("/campaigns/<int:campaign_id>")
@operation("A campaign and its progress", (200, "campaign", CampaignOut), by_id=True)
def get_campaign(campaign_id: int):
    # From the primary: progress must not lag behind a standby.
    with get_db().session() as session:
        return jsonify(campaign_json(owned(session, Campaign, campaign_id)))


def _revert_start(campaign_id: int) -> None:
    def revert(session: Session) -> None:
        campaign = session.get(Campaign, campaign_id)
        if campaign is not None and campaign.status == "running":
            campaign.status = "stopped"

    get_db().transaction(revert)


@bp.post("/campaigns/<int:campaign_id>/start")
@operation(
    "Start or resume a campaign",
    (202, "started", CampaignOut),
    by_id=True,
    conflict=Answer("not a draft or stopped campaign", Error),
)
def start_campaign(campaign_id: int):
    """Start (or resume a stopped) campaign: its first batch goes to the `marathon` queue."""

    def fn(session: Session) -> tuple[bool, dict]:
        campaign = owned(session, Campaign, campaign_id)
        started = campaign_jobs.start_campaign(session, campaign)
        return started, campaign_json(campaign)

    started, body = write(fn)
    if not started:
        raise ApiError(409, f"campaign is {body['status']}; only draft or stopped ones start")
    try:
        campaign_jobs.enqueue_batch(campaign_id)
    except Exception as exc:
        log.error(
            "could not enqueue campaign",
            extra={
                "campaign_id": campaign_id,
                "error_type": type(exc).__name__,
                "where": where(exc),
            },
        )
        _revert_start(campaign_id)
        raise ApiError(503, "the job queue is unavailable; campaign not started") from None
    return jsonify(body), 202


@bp.post("/campaigns/<int:campaign_id>/stop")
@operation(
    "Ask a campaign to stop",
    (202, "stopping", CampaignOut),
    by_id=True,
    conflict=Answer("already finished", Error),
)
def stop_campaign(campaign_id: int):
    """Ask a running campaign to stop: the next batch (or the next 50 sends) sees the flag."""

    def fn(session: Session) -> dict:
        campaign = owned(session, Campaign, campaign_id)
        if campaign.status == "finished":
            raise ApiError(409, "campaign already finished")
        campaign.stop_requested = True
        if campaign.status == "draft":
            campaign.status = "stopped"
            campaign.finished_at = datetime.now(UTC)
        session.flush()
        return campaign_json(campaign)

    body = write(fn)
    if body["status"] == "running":
        # A campaign whose batch chain broke would never see the flag: give it a batch.
        with contextlib.suppress(Exception):
            campaign_jobs.ensure_chain(campaign_id)
    return jsonify(body), 202


@bp.post("/campaigns/<int:campaign_id>/resume")
@operation(
    "Resume a stopped campaign, or give a running one whose batch chain broke its next batch",
    (
        202,
        "resumed; `requeued` says whether a batch was enqueued (false while one is in flight)",
        CampaignResumed,
    ),
    by_id=True,
    conflict=Answer("finished (only running, stopped or draft campaigns resume)", Error),
    unavailable=QUEUE_DOWN,
)
def resume_campaign(campaign_id: int):
    """Resume a campaign: a stopped one starts again from its cursor; a running one whose batch
    chain broke (a lost job) gets its next batch. Idempotent: a batch in flight is not doubled."""
    with get_db().session() as session:
        status = owned(session, Campaign, campaign_id).status
    if status in ("draft", "stopped"):
        return start_campaign(campaign_id)
    if status != "running":
        raise ApiError(409, f"campaign is {status}; only running or stopped ones resume")
    try:
        requeued = campaign_jobs.ensure_chain(campaign_id)
    except Exception:
        log.exception("could not enqueue campaign %s", campaign_id)
        raise ApiError(503, "the job queue is unavailable; retry") from None
    with get_db().session() as session:
        body = campaign_json(owned(session, Campaign, campaign_id))
    return jsonify({**body, "requeued": requeued}), 202
