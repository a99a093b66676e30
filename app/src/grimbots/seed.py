"""Demo data for a fresh install, the lab and the load test: idempotent, found again by name.

The lab's phase tests and the locustfile need one known seller, funnel, bot and pool; running
``grimbots seed-demo`` on every deploy must find them rather than create twins. Secrets come from
the environment when set (so the lab can point the fake Telegram and the load test at them);
the lab-only defaults are never meant for production.
"""

from __future__ import annotations

import os
from typing import Any

from sqlalchemy import select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from grimbots.auth import create_seller, hash_token
from grimbots.db import Database
from grimbots.models import Bot, Downsell, Funnel, Offer, PoolBot, RedirectPool, Seller

DEMO_SELLER_NAME = "Demo Seller"
DEMO_SELLER_EMAIL = "demo@grimbots.local"
DEMO_FUNNEL_NAME = "Demo funnel"
DEMO_BOT_USERNAME = "demo_sales_bot"
DEMO_BOT_TOKEN = "123456:DEMO-TOKEN"
# Lab only: production sets GRIMBOTS_DEMO_WEBHOOK_SECRET (or never seeds demo data).
DEFAULT_WEBHOOK_SECRET = "demo-webhook-secret"
DEMO_POOL_SLUG = "demo"

WELCOME_TEXT = (
    "Bem-vindo ao grupo VIP! Conteúdo novo todos os dias, suporte direto e acesso imediato "
    "após o pagamento via PIX. Escolha seu plano abaixo."
)
WELCOME_PHOTO = "https://telegram.org/img/t_logo.png"
ACCESS_LINK = "https://t.me/+GrimBotsDemoVip"
OFFERS = [("VIP Mensal", 1990), ("VIP Vitalício", 4990)]
# (delay in minutes, price in cents, text)
DOWNSELLS = [
    (5, 1490, "Ainda pensando? Leve o VIP Mensal por R$ 14,90 só hoje."),
    (15, 990, "Última chance: VIP Mensal por R$ 9,90."),
]


def _seller(session: Session) -> tuple[Seller, str | None]:
    """The demo seller, and its token when one was (re)issued in this run."""
    env_token = os.environ.get("GRIMBOTS_DEMO_API_TOKEN") or None
    seller = session.execute(
        select(Seller).where(Seller.email == DEMO_SELLER_EMAIL)
    ).scalar_one_or_none()
    if seller is None:
        if env_token is None:
            return create_seller(session, DEMO_SELLER_NAME, DEMO_SELLER_EMAIL)
        seller = Seller(
            name=DEMO_SELLER_NAME, email=DEMO_SELLER_EMAIL, api_token_hash=hash_token(env_token)
        )
        session.add(seller)
        session.flush()
        return seller, env_token
    if env_token is not None and seller.api_token_hash != hash_token(env_token):
        # The environment is authoritative: the lab and load test use the token they were given.
        seller.api_token_hash = hash_token(env_token)
        return seller, env_token
    return seller, None


def _funnel(session: Session, seller: Seller) -> Funnel:
    funnel = session.execute(
        select(Funnel).where(Funnel.seller_id == seller.id, Funnel.name == DEMO_FUNNEL_NAME)
    ).scalar_one_or_none()
    if funnel is not None:
        return funnel
    funnel = Funnel(
        seller_id=seller.id,
        name=DEMO_FUNNEL_NAME,
        welcome_text=WELCOME_TEXT,
        welcome_media_type="photo",
        welcome_media_url=WELCOME_PHOTO,
        access_link=ACCESS_LINK,
    )
    funnel.offers = [
        Offer(title=title, price_cents=price, position=i) for i, (title, price) in enumerate(OFFERS)
    ]
    funnel.downsells = [
        Downsell(position=i, delay_minutes=delay, price_cents=price, text=body)
        for i, (delay, price, body) in enumerate(DOWNSELLS)
    ]
    session.add(funnel)
    session.flush()
    return funnel


def _bot(session: Session, seller: Seller, funnel: Funnel, webhook_secret: str) -> Bot:
    bot = session.execute(select(Bot).where(Bot.username == DEMO_BOT_USERNAME)).scalar_one_or_none()
    if bot is None:
        bot = Bot(
            seller_id=seller.id,
            funnel_id=funnel.id,
            token=DEMO_BOT_TOKEN,
            username=DEMO_BOT_USERNAME,
            webhook_secret=webhook_secret,
            active=True,
            status="ok",
        )
        session.add(bot)
        session.flush()
    elif bot.webhook_secret != webhook_secret:
        # Same rule as the token: the configured secret wins, or Telegram's header check fails.
        bot.webhook_secret = webhook_secret
    return bot


def _pool(session: Session, seller: Seller, bot: Bot) -> RedirectPool:
    pool = session.execute(
        select(RedirectPool).where(RedirectPool.slug == DEMO_POOL_SLUG)
    ).scalar_one_or_none()
    if pool is None:
        pool = RedirectPool(seller_id=seller.id, slug=DEMO_POOL_SLUG, strategy="round_robin")
        session.add(pool)
        session.flush()
    member = session.execute(
        select(PoolBot).where(PoolBot.pool_id == pool.id, PoolBot.bot_id == bot.id)
    ).scalar_one_or_none()
    if member is None:
        session.add(PoolBot(pool_id=pool.id, bot_id=bot.id, weight=1))
        session.flush()
    return pool


def _seed(session: Session) -> dict[str, Any]:
    webhook_secret = os.environ.get("GRIMBOTS_DEMO_WEBHOOK_SECRET") or DEFAULT_WEBHOOK_SECRET
    seller, token = _seller(session)
    funnel = _funnel(session, seller)
    bot = _bot(session, seller, funnel, webhook_secret)
    pool = _pool(session, seller, bot)
    offer_ids = list(
        session.execute(
            select(Offer.id).where(Offer.funnel_id == funnel.id).order_by(Offer.position)
        ).scalars()
    )
    return {
        "seller_id": seller.id,
        "api_token": token,
        "bot_id": bot.id,
        "bot_username": bot.username,
        "webhook_secret": bot.webhook_secret,
        "funnel_id": funnel.id,
        "offer_ids": offer_ids,
        "pool_slug": pool.slug,
    }


def seed_demo(db: Database) -> dict[str, Any]:
    """Create the demo objects that are missing and return their ids (and a new token, once).

    Two deploys seeding at the same moment collide on a unique constraint; the loser retries
    once and finds what the winner created.
    """
    try:
        with db.session() as session:
            return _seed(session)
    except IntegrityError:
        with db.session() as session:
            return _seed(session)
