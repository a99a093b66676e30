"""Several sellers in one scenario (`several_sellers`): 2-3 sellers, a bot each, their leads'
journeys interleaved on the same queues, workers and fake Telegram. The invariants are checked
per bot; besides, no lead hears from another seller's bot, and another seller's API token and
webhook secret reach nothing of the first seller's."""

from __future__ import annotations

import dataclasses
import json

from sqlalchemy import select

from grimbots.models import Bot

SECRET_HEADER = "X-Telegram-Bot-Api-Secret-Token"


def probe_tenancy(run) -> None:
    """Seller 1 reaches for seller 0's bot: reading it, switching it off, and posting an update
    to its webhook with seller 1's own secret. Each answer goes to `run.tenancy`."""
    mine, theirs = run.bots[0], run.bots[1]
    auth = {"Authorization": f"Bearer {theirs.api_token}"}
    update = {"update_id": 1, "message": {"message_id": 1, "date": 0, "text": "/start",
              "chat": {"id": 1, "type": "private"}, "from": {"id": 1, "is_bot": False,
              "first_name": "x"}}}  # fmt: skip
    probes = (
        ("GET another seller's bot", lambda: run.client.get(f"/api/bots/{mine.bot_id}",
                                                           headers=auth)),
        ("PATCH another seller's bot", lambda: run.client.patch(
            f"/api/bots/{mine.bot_id}", json={"active": False}, headers=auth)),
        ("webhook with another bot's secret", lambda: run.client.post(
            f"/webhook/telegram/{mine.bot_id}", data=json.dumps(update),
            headers={SECRET_HEADER: theirs.secret, "Content-Type": "application/json"})),
    )  # fmt: skip
    for what, call in probes:
        try:
            status = call().status_code
        except Exception as exc:  # noqa: BLE001 - an escaped exception is a 500
            run.notes.append(f"{what} raised {type(exc).__name__}: {exc}")
            status = 500
        run.tenancy.append((what, status))
    run.fired["several_sellers"] += 1


def per_bot(run, first):
    """Split the scenario's observation by bot: each gets its own leads' updates and chats and
    the other bots' chats as foreign; the scenario-wide inputs stay with bot 0."""
    if len(run.bots) == 1:
        return [first]
    with run.hdb.session() as session:
        still_active = session.scalar(select(Bot.active).where(Bot.id == run.bot_id))
    tenancy = list(run.tenancy)
    if not still_active:  # every pause of the scenario was undone by its own seller
        tenancy.append(("the bot left switched off after another seller's PATCH", 200))
    out = []
    for k, bot in enumerate(run.bots):
        leads = [i for i in run.chats if run.s.bot_of(i) == k]
        chats = {i: run.chats[i] for i in leads}
        foreign = {c for i, c in run.chats.items() if i not in chats}
        common = {
            "token": bot.token,
            "bot_id": bot.bot_id,
            "chats": chats,
            "updates": [u for u in first.updates if u.lead in chats],
            "welcome_content": (bot.welcome_text, first.welcome_content[1]),
            "paused": [(a, b) for a, b, owner in run.paused if owner == bot.bot_id],
            "foreign_chats": foreign,
            "hold_ends": run.hold_ends_of(bot.bot_id),
        }
        if k == 0:
            out.append(dataclasses.replace(first, **common, tenancy=tenancy))
        else:
            out.append(
                dataclasses.replace(
                    first,
                    **common,
                    campaign_texts={},
                    campaign_audience={},
                    refused_payments=[],
                    campaign_refused=[],
                    go_answers=[],
                    go_tokens=[],
                    malformed=[],
                    tenancy=[],
                )  # fmt: skip
            )
    return out
