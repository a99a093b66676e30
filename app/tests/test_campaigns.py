"""Remarketing campaigns: batches, resume, stop, blocked users, tenancy, no double send.

Every assertion about who received what is made at the fake Telegram API, where the messages
actually arrive.
"""

from __future__ import annotations

import pytest

from grimbots import campaigns, outbox, queues
from grimbots.auth import create_seller
from grimbots.campaigns import run_campaign_batch
from grimbots.models import BlockedUser, Campaign, Lead, Seller
from grimbots.telegram import TransientError
from tests.factories import make_bot, make_seller


def add_leads(session, bot, chat_ids, **fields):
    leads = [Lead(bot_id=bot.id, telegram_user_id=c, chat_id=c, **fields) for c in chat_ids]
    session.add_all(leads)
    session.flush()
    return leads


@pytest.fixture
def world(db):
    """Seller A with a bot and 7 leads, a second bot of A, and seller B with its own bot."""
    with db.session() as session:
        seller_a, _ = make_seller(session, "A")
        seller_b, _ = make_seller(session, "B")
        bot = make_bot(session, seller_a)
        other_bot_a = make_bot(session, seller_a)
        bot_b = make_bot(session, seller_b)
        leads = add_leads(session, bot, range(1001, 1008))
        add_leads(session, other_bot_a, range(2001, 2004))
        # B's leads include the same Telegram users as A's: they must still not be reached.
        add_leads(session, bot_b, [1001, 1002, 3001])
    return {
        "seller": seller_a,
        "bot": bot,
        "other_bot": other_bot_a,
        "bot_b": bot_b,
        "chats": [lead.chat_id for lead in leads],
        "lead_ids": [lead.id for lead in leads],
    }


def new_campaign(db, world, **fields) -> int:
    with db.session() as session:
        campaign = Campaign(
            seller_id=world["seller"].id,
            bot_id=world["bot"].id,
            name="promo",
            text=fields.pop("text", "Promoção!"),
            **fields,
        )
        session.add(campaign)
        session.flush()
        return campaign.id


def start(db, campaign_id) -> None:
    with db.session() as session:
        assert campaigns.start_campaign(session, session.get(Campaign, campaign_id))


def load(db, campaign_id) -> Campaign:
    with db.session() as session:
        return session.get(Campaign, campaign_id)


def received(fake_tg, bot, method=None) -> list[int]:
    """Chat ids that got a message from this bot, one entry per delivered message."""
    return sorted(c["chat_id"] for c in fake_tg.sent(method=method, token=bot.token))


def marathon_jobs() -> int:
    return queues.get_queue(queues.MARATHON).count


def test_campaign_reaches_every_lead_of_its_bot_once_in_batches(db, world, fake_tg, drain):
    cid = new_campaign(db, world)
    start(db, cid)
    first = run_campaign_batch(cid, batch_size=3)
    assert first["outcome"] == "continuing" and first["sent"] == 3
    assert marathon_jobs() == 1  # the next batch enqueued itself
    drain()
    assert received(fake_tg, world["bot"], "sendMessage") == world["chats"]
    campaign = load(db, cid)
    assert campaign.status == "finished" and campaign.finished_at is not None
    counters = (campaign.total, campaign.sent, campaign.failed, campaign.skipped_blocked)
    assert counters == (7, 7, 0, 0)
    assert campaign.cursor == world["lead_ids"][-1]


def test_campaign_never_reaches_other_bots_or_other_sellers(db, world, fake_tg, drain):
    cid = new_campaign(db, world)
    start(db, cid)
    run_campaign_batch(cid, batch_size=4)
    drain()
    assert fake_tg.calls(token=world["bot_b"].token) == []
    assert fake_tg.calls(token=world["other_bot"].token) == []
    reached = {c["chat_id"] for c in fake_tg.calls()}
    assert 3001 not in reached and not reached & {2001, 2002, 2003}
    assert load(db, cid).total == 7


def test_a_campaign_whose_bot_belongs_to_another_seller_sends_nothing(db, world, fake_tg, drain):
    """Defence in depth: even a row pointing across sellers reaches nobody."""
    with db.session() as session:
        seller_b = session.get(Seller, world["bot_b"].seller_id)
        campaign = Campaign(
            seller_id=world["seller"].id, bot_id=world["bot_b"].id, name="x", text="y"
        )
        session.add(campaign)
        session.flush()
        cid = campaign.id
        assert seller_b.id != world["seller"].id
    start(db, cid)
    run_campaign_batch(cid)
    drain()
    assert fake_tg.calls() == []
    assert load(db, cid).status == "stopped"


def test_blocked_leads_are_skipped_and_counted(db, world, fake_tg, drain):
    with db.session() as session:
        session.get(Lead, world["lead_ids"][0]).blocked = True
        session.add(BlockedUser(bot_id=world["bot"].id, telegram_user_id=world["chats"][1]))
    cid = new_campaign(db, world)
    start(db, cid)
    run_campaign_batch(cid, batch_size=3)
    drain()
    assert received(fake_tg, world["bot"]) == world["chats"][2:]
    campaign = load(db, cid)
    assert (campaign.sent, campaign.skipped_blocked) == (5, 2)


def test_a_lead_who_blocked_the_bot_meanwhile_is_marked_and_skipped(db, world, fake_tg, drain):
    fake_tg.add_fault(
        status=403,
        method="sendMessage",
        chat_id=world["chats"][3],
        description="Forbidden: bot was blocked by the user",
    )
    cid = new_campaign(db, world)
    start(db, cid)
    run_campaign_batch(cid)
    drain()
    campaign = load(db, cid)
    assert (campaign.sent, campaign.skipped_blocked, campaign.failed) == (6, 1, 0)
    with db.session() as session:
        assert session.get(Lead, world["lead_ids"][3]).blocked is True


def test_campaign_resumes_from_its_cursor_after_partial_progress(db, world, fake_tg, drain):
    cid = new_campaign(db, world)
    start(db, cid)
    run_campaign_batch(cid, batch_size=3)
    queues.get_queue(queues.MARATHON).empty()  # the worker died: the next batch is lost
    campaign = load(db, cid)
    assert campaign.cursor == world["lead_ids"][2] and campaign.sent == 3
    run_campaign_batch(cid, batch_size=3)  # an operator (or RQ's retry) runs it again
    drain()
    assert received(fake_tg, world["bot"]) == world["chats"]
    assert load(db, cid).sent == 7


def test_a_batch_interrupted_mid_send_does_not_send_twice_when_retried(
    db, world, fake_tg, drain, monkeypatch
):
    real_send, calls = outbox.send, {"n": 0}

    def flaky(*args, **kwargs):
        calls["n"] += 1
        if calls["n"] == 3:
            raise TransientError(502, "Bad Gateway")
        return real_send(*args, **kwargs)

    monkeypatch.setattr(outbox, "send", flaky)
    cid = new_campaign(db, world)
    start(db, cid)
    with pytest.raises(TransientError):
        run_campaign_batch(cid, batch_size=5)
    assert load(db, cid).cursor == 0  # nothing committed: the whole batch is retried
    run_campaign_batch(cid, batch_size=5)
    drain()
    assert received(fake_tg, world["bot"]) == world["chats"]
    campaign = load(db, cid)
    assert (campaign.sent, campaign.failed, campaign.status) == (7, 0, "finished")


def test_stop_request_ends_the_campaign_before_the_next_batch(db, world, fake_tg, drain):
    cid = new_campaign(db, world)
    start(db, cid)
    run_campaign_batch(cid, batch_size=3)
    with db.session() as session:
        session.get(Campaign, cid).stop_requested = True
    drain()
    campaign = load(db, cid)
    assert campaign.status == "stopped"
    assert received(fake_tg, world["bot"]) == world["chats"][:3]


def test_stop_request_takes_effect_within_a_batch(db, world, fake_tg, drain, monkeypatch):
    monkeypatch.setattr(campaigns, "STOP_CHECK_EVERY", 2)
    real_send, calls = outbox.send, {"n": 0}
    cid = new_campaign(db, world)

    def send_then_stop(*args, **kwargs):
        calls["n"] += 1
        if calls["n"] == 3:
            with db.session() as session:
                session.get(Campaign, cid).stop_requested = True
        return real_send(*args, **kwargs)

    monkeypatch.setattr(outbox, "send", send_then_stop)
    start(db, cid)
    result = run_campaign_batch(cid, batch_size=200)
    assert result["outcome"] == "stopped"
    campaign = load(db, cid)
    assert campaign.status == "stopped" and campaign.sent == 4
    assert campaign.cursor == world["lead_ids"][3]
    assert received(fake_tg, world["bot"]) == world["chats"][:4]
    assert marathon_jobs() == 0


def test_stopped_campaign_resumes_where_it_stopped(db, world, fake_tg, drain):
    cid = new_campaign(db, world)
    start(db, cid)
    run_campaign_batch(cid, batch_size=3)
    with db.session() as session:
        session.get(Campaign, cid).stop_requested = True
    drain()
    start(db, cid)
    assert load(db, cid).stop_requested is False
    run_campaign_batch(cid, batch_size=3)
    drain()
    assert received(fake_tg, world["bot"]) == world["chats"]
    campaign = load(db, cid)
    assert (campaign.status, campaign.sent, campaign.total) == ("finished", 7, 7)


def test_rerunning_a_finished_campaign_sends_nothing_again(db, world, fake_tg, drain):
    cid = new_campaign(db, world)
    start(db, cid)
    run_campaign_batch(cid)
    drain()
    before = len(fake_tg.calls())
    with db.session() as session:
        campaign = session.get(Campaign, cid)
        campaign.status, campaign.cursor, campaign.sent = "running", 0, 0
    run_campaign_batch(cid)
    drain()
    assert len(fake_tg.calls()) == before
    assert received(fake_tg, world["bot"]) == world["chats"]


def test_two_concurrent_chains_of_one_campaign_send_and_count_once(db, world, fake_tg, drain):
    cid = new_campaign(db, world)
    start(db, cid)
    campaigns.enqueue_batch(cid, 2)
    campaigns.enqueue_batch(cid, 2)
    drain()
    assert received(fake_tg, world["bot"]) == world["chats"]
    campaign = load(db, cid)
    assert (campaign.sent, campaign.status) == (7, "finished")


@pytest.mark.parametrize(
    ("audience", "expected"), [("paid", [1002, 1004]), ("unpaid", [1001, 1003, 1005, 1006, 1007])]
)
def test_audience_filter_selects_paid_or_unpaid_leads(
    db, world, fake_tg, drain, audience, expected
):
    with db.session() as session:
        for lead_id in (world["lead_ids"][1], world["lead_ids"][3]):
            session.get(Lead, lead_id).paid = True
    cid = new_campaign(db, world, audience=audience)
    start(db, cid)
    run_campaign_batch(cid)
    drain()
    assert received(fake_tg, world["bot"]) == expected
    assert load(db, cid).total == len(expected)


def test_leads_arriving_after_the_start_are_not_part_of_the_campaign(db, world, fake_tg, drain):
    cid = new_campaign(db, world)
    start(db, cid)
    with db.session() as session:
        add_leads(session, world["bot"], [1999])
    run_campaign_batch(cid)
    drain()
    assert 1999 not in received(fake_tg, world["bot"])
    assert load(db, cid).sent == 7


def test_media_campaign_sends_caption_and_url_buttons_on_the_media(db, world, fake_tg, drain):
    buttons = [{"text": "Comprar", "url": "https://example.com/buy"}]
    cid = new_campaign(
        db, world, media_type="photo", media_url="https://example.com/p.jpg", buttons=buttons
    )
    start(db, cid)
    run_campaign_batch(cid)
    drain()
    photos = fake_tg.sent(method="sendPhoto", token=world["bot"].token)
    assert len(photos) == 7
    assert photos[0]["caption"] == "Promoção!"
    assert photos[0]["reply_markup"] == {"inline_keyboard": [[buttons[0]]]}
    assert fake_tg.sent(method="sendMessage", token=world["bot"].token) == []


def test_media_campaign_with_long_text_sends_the_text_after_the_media(db, world, fake_tg, drain):
    with db.session() as session:
        for lead_id in world["lead_ids"][2:]:
            session.delete(session.get(Lead, lead_id))
    text = "Oferta " * 200  # 1,400 characters: over Telegram's caption limit
    cid = new_campaign(
        db,
        world,
        text=text,
        media_type="video",
        media_url="https://example.com/v.mp4",
        buttons=[{"text": "Ver", "url": "https://example.com"}],
    )
    start(db, cid)
    run_campaign_batch(cid)
    drain()
    videos = fake_tg.sent(method="sendVideo", token=world["bot"].token)
    texts = fake_tg.sent(method="sendMessage", token=world["bot"].token)
    assert (
        sorted(c["chat_id"] for c in videos) == sorted(c["chat_id"] for c in texts) == [1001, 1002]
    )
    assert all(c["caption"] is None for c in videos)
    assert texts[0]["text"] == text and texts[0]["reply_markup"]["inline_keyboard"]
    for call in texts:  # the text follows its media in each chat
        media = next(v for v in videos if v["chat_id"] == call["chat_id"])
        assert media["seq"] < call["seq"]
    assert load(db, cid).sent == 2


def test_campaign_started_through_the_api_runs_to_completion(client, db, world, fake_tg, drain):
    # The API seller owns its own bot and leads, next to seller A's.
    with db.session() as session:
        api_seller, token = create_seller(session, "API", "api-campaign@example.com")
        bot = make_bot(session, api_seller)
        add_leads(session, bot, [4001, 4002])
    headers = {"Authorization": f"Bearer {token}"}
    created = client.post(
        "/api/campaigns", json={"bot_id": bot.id, "name": "n", "text": "t"}, headers=headers
    ).json
    assert client.post(f"/api/campaigns/{created['id']}/start", headers=headers).status_code == 202
    drain()
    shown = client.get(f"/api/campaigns/{created['id']}", headers=headers).json
    assert shown["status"] == "finished"
    assert shown["progress"] == {
        "total": 2,
        "processed": 2,
        "sent": 2,
        "failed": 0,
        "skipped_blocked": 0,
        "percent": 100.0,
    }
    assert received(fake_tg, bot) == [4001, 4002]
    assert received(fake_tg, world["bot"]) == []
