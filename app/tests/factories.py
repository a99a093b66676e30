"""Small builders for test data, written straight through the models."""

from __future__ import annotations

import hashlib
import secrets
import time

from grimbots.models import Bot, Downsell, Funnel, Offer, PoolBot, RedirectPool, Seller

_seq = iter(range(1, 10**9))


def make_seller(session, name: str = "Seller") -> tuple[Seller, str]:
    token = secrets.token_urlsafe(24)
    n = next(_seq)
    seller = Seller(
        name=f"{name} {n}",
        email=f"seller{n}-{secrets.token_hex(3)}@example.com",
        api_token_hash=hashlib.sha256(token.encode()).hexdigest(),
    )
    session.add(seller)
    session.flush()
    return seller, token


def make_funnel(
    session,
    seller: Seller,
    *,
    text: str = "Bem-vindo! Escolha sua oferta:",
    media: str | None = "photo",
    downsells: int = 2,
    bump: bool = False,
) -> Funnel:
    funnel = Funnel(
        seller_id=seller.id,
        name="Funil",
        welcome_text=text,
        welcome_media_type=media,
        welcome_media_url="https://example.com/welcome.jpg" if media else None,
        access_link="https://t.me/+vipgroup",
    )
    funnel.offers = [
        Offer(title="Curso", price_cents=9700, position=0),
        Offer(title="Mentoria", price_cents=19700, position=1),
    ]
    if bump:
        funnel.offers.append(Offer(title="Bônus", price_cents=1990, position=2))
    funnel.downsells = [
        Downsell(
            position=i,
            delay_minutes=5 * (i + 1),
            price_cents=4700 - 1000 * i,
            text=f"Desconto {i + 1}",
        )
        for i in range(downsells)
    ]
    session.add(funnel)
    session.flush()
    if bump:
        funnel.order_bump_offer_id = funnel.offers[-1].id
    return funnel


def make_bot(
    session,
    seller: Seller,
    funnel: Funnel | None = None,
    *,
    active: bool = True,
    status: str = "ok",
) -> Bot:
    n = next(_seq)
    bot = Bot(
        seller_id=seller.id,
        funnel_id=funnel.id if funnel else None,
        token=f"{100000 + n}:TEST-{secrets.token_hex(8)}",
        username=f"bot{n}_{secrets.token_hex(3)}_bot",
        webhook_secret=secrets.token_urlsafe(16),
        active=active,
        status=status,
    )
    session.add(bot)
    session.flush()
    return bot


def make_pool(
    session,
    seller: Seller,
    bots: list[tuple[Bot, int]],
    slug: str | None = None,
    strategy: str = "round_robin",
) -> RedirectPool:
    pool = RedirectPool(
        seller_id=seller.id, slug=slug or f"pool-{secrets.token_hex(4)}", strategy=strategy
    )
    pool.members = [PoolBot(bot_id=b.id, weight=w) for b, w in bots]
    session.add(pool)
    session.flush()
    return pool


_update_ids = iter(range(int(time.time()) % 100000 * 1000, 10**12))


def next_update_id() -> int:
    return next(_update_ids)


def start_update(user_id: int, payload: str = "", update_id: int | None = None) -> dict:
    text = f"/start {payload}".strip()
    return message_update(user_id, text, update_id)


def message_update(user_id: int, text: str, update_id: int | None = None) -> dict:
    uid = update_id if update_id is not None else next_update_id()
    return {
        "update_id": uid,
        "message": {
            "message_id": uid % 100000,
            "date": int(time.time()),
            "chat": {"id": user_id, "type": "private", "first_name": "Lead"},
            "from": {"id": user_id, "is_bot": False, "first_name": "Lead", "username": "lead"},
            "text": text,
        },
    }


def callback_update(
    user_id: int, data: str, update_id: int | None = None, message_id: int = 1
) -> dict:
    uid = update_id if update_id is not None else next_update_id()
    return {
        "update_id": uid,
        "callback_query": {
            "id": str(uid),
            "from": {"id": user_id, "is_bot": False, "first_name": "Lead"},
            "message": {
                "message_id": message_id,
                "date": int(time.time()),
                "chat": {"id": user_id, "type": "private"},
            },
            "chat_instance": "1",
            "data": data,
        },
    }
