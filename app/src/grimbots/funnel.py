"""The sales funnel: welcome, offers (with order bump), PIX charge, downsells, delivery.

Every step is idempotent: each message has an idempotency key derived from what caused it
(the /start's generation, the payment id, the downsell position), so a retried job re-runs the
step and the outbox sends nothing twice. Everything that decides a message or money reads the
primary: a lagging standby (GRIMBOTS_DATABASE_READ_URL) serves only a click's attribution.
"""

from __future__ import annotations

import logging
from datetime import datetime, timedelta

from sqlalchemy import or_, select, update
from sqlalchemy.orm import selectinload

from grimbots import outbox
from grimbots.cleantext import clean
from grimbots.db import get_db
from grimbots.models import (
    Bot,
    Click,
    Downsell,
    Funnel,
    Lead,
    Offer,
    OutboundMessage,
    Payment,
    utcnow,
)
from grimbots.queues import GATEWAY, TASKS, enqueue, enqueue_in
from grimbots.redis_pool import state

log = logging.getLogger(__name__)

CAPTION_LIMIT = 1024
TEXT_LIMIT = 4096
ATTRIBUTION_FIELDS = (
    "utm_source",
    "utm_medium",
    "utm_campaign",
    "utm_content",
    "utm_term",
    "fbclid",
)
# Each attribution field's column length (models.Click, models.Lead).
ATTRIBUTION_LIMITS = dict.fromkeys(ATTRIBUTION_FIELDS, 200) | {"fbclid": 500}


def brl(cents: int) -> str:
    """R$ 1.234,50: how Brazilian buyers read prices."""
    reais, centavos = divmod(int(cents), 100)
    return f"R$ {reais:,}".replace(",", ".") + f",{centavos:02d}"


def load_funnel(session, funnel_id: int | None) -> Funnel | None:
    if funnel_id is None:
        return None
    return session.scalar(
        select(Funnel)
        .where(Funnel.id == funnel_id)
        .options(selectinload(Funnel.offers), selectinload(Funnel.downsells))
    )


def offer_keyboard(offers: list[Offer]) -> dict:
    return {
        "inline_keyboard": [
            [{"text": f"{o.title} - {brl(o.price_cents)}", "callback_data": f"buy:{o.id}"}]
            for o in offers
        ]
    }


def tracking_key(token: str) -> str:
    return f"gb:track:{token}"


def attribution_for(token: str) -> dict | None:
    """The click behind a /start token: Redis first (24 h), the clicks table after that."""
    if not token or len(token) != 32 or not all(c in "0123456789abcdef" for c in token):
        return None
    data = state().hgetall(tracking_key(token))
    if not data:
        with get_db().read_session() as session:
            click = session.scalar(select(Click).where(Click.token == token))
            if click is None:
                return None
            data = {k: getattr(click, k) for k in ATTRIBUTION_FIELDS}
    # Cleaned here too: a click stored before /go cleaned its input may hold NUL, which
    # PostgreSQL refuses in the lead's row (the /start would fail on every retry).
    return {k: clean(data.get(k), n) for k, n in ATTRIBUTION_LIMITS.items()} | {
        "click_token": token
    }


def generation_of(received: datetime) -> int:
    """A /start's funnel generation: when its update was received, in milliseconds.

    Not its update_id: Telegram restarts update_id at random after a week without updates, so
    a later /start may carry a lower id. It is stored with the inbound row, so a retried job of
    the same /start gets the same generation; and it is far above the update ids that earlier
    versions stored as generations, so leads started before keep moving forward.
    """
    return int(received.timestamp() * 1000)


def start(bot: Bot, lead: Lead, payload: str, generation: int) -> None:
    """A /start: copy the click's attribution, reset the funnel, send the welcome again.

    The reset happens only when the generation moves forward: a retried job of this /start
    must not undo what came after it, such as the downsell chain a tap made in this
    generation (a second chain otherwise).
    """
    attribution = attribution_for(payload.strip())
    values = {"funnel_generation": generation, "last_start_at": utcnow(), "downsell_root_id": None}
    if attribution:
        values |= attribution
    with get_db().session() as session:
        session.execute(
            update(Lead)
            .where(Lead.id == lead.id, Lead.funnel_generation < generation)
            .values(**values)
        )
    send_welcome(bot, lead, generation)


def welcome_claimed(bot: Bot, lead: Lead, generation: int) -> bool:
    """True when this /start's welcome has an outbox row: a run of its job got past the
    last-start throttle before (the row is written after it), so a retry must not be throttled
    by a later /start that took the lock meanwhile (a long 429 hold or an outage bunches the
    retries of two distinct /starts together)."""
    key = f"welcome:{bot.id}:{lead.id}:{generation}"
    with get_db().session() as session:
        found = session.scalar(
            select(OutboundMessage.id)
            .where(OutboundMessage.idempotency_key.in_((key, f"{key}:media", f"{key}:text")))
            .limit(1)
        )
    return found is not None


def send_welcome(bot: Bot, lead: Lead, generation: int) -> None:
    with get_db().session() as session:
        funnel = load_funnel(session, bot.funnel_id)
    if funnel is None:
        log.warning("bot has no funnel; /start gets no welcome", extra={"bot_id": bot.id})
        return
    key = f"welcome:{bot.id}:{lead.id}:{generation}"
    markup = offer_keyboard(funnel.offers) if funnel.offers else None
    text = funnel.welcome_text[:TEXT_LIMIT]
    media_method = {"photo": "sendPhoto", "video": "sendVideo"}.get(funnel.welcome_media_type or "")
    if media_method and funnel.welcome_media_url:
        media = {funnel.welcome_media_type: funnel.welcome_media_url}
        if len(text) <= CAPTION_LIMIT:
            payload = media | {"caption": text} | ({"reply_markup": markup} if markup else {})
            outbox.send(bot, lead.chat_id, key, media_method, payload, lead_id=lead.id)
            return
        # Telegram caps captions at 1,024 characters: the text follows the media on its own.
        outbox.send(bot, lead.chat_id, f"{key}:media", media_method, media, lead_id=lead.id)
        key = f"{key}:text"
    payload = {"text": text or "👋"} | ({"reply_markup": markup} if markup else {})
    outbox.send(bot, lead.chat_id, key, "sendMessage", payload, lead_id=lead.id)


def offer_tapped(bot: Bot, lead: Lead, offer_id: int, tap: str) -> None:
    """buy:<offer>: propose the order bump first when the funnel has one, else charge.

    `tap` identifies the tap's update (jobs.tap_id): a retried tap proposes and charges once.
    """
    with get_db().session() as session:
        funnel = load_funnel(session, bot.funnel_id)
    offer = _offer_of(funnel, offer_id)
    if offer is None:
        log.info("tap on an offer that is not in the bot's funnel", extra={"offer_id": offer_id})
        return
    bump = _offer_of(funnel, funnel.order_bump_offer_id) if funnel.order_bump_offer_id else None
    if bump is not None and bump.id != offer.id:
        markup = {
            "inline_keyboard": [
                [
                    {
                        "text": f"Sim, adicionar {bump.title} (+{brl(bump.price_cents)})",
                        "callback_data": f"bump:{offer.id}:1",
                    }
                ],
                [{"text": "Não, obrigado", "callback_data": f"bump:{offer.id}:0"}],
            ]
        }
        text = f"Aproveite: leve também {bump.title} por mais {brl(bump.price_cents)}?"
        outbox.send(
            bot,
            lead.chat_id,
            f"bump:{bot.id}:{lead.id}:{tap}",
            "sendMessage",
            {"text": text, "reply_markup": markup},
            lead_id=lead.id,
        )
        return
    _charge_offer(bot, lead, offer, offer.price_cents, tap)


def bump_answered(bot: Bot, lead: Lead, offer_id: int, accepted: bool, tap: str) -> None:
    with get_db().session() as session:
        funnel = load_funnel(session, bot.funnel_id)
    offer = _offer_of(funnel, offer_id)
    if offer is None:
        return
    amount = offer.price_cents
    if accepted and funnel.order_bump_offer_id:
        bump = _offer_of(funnel, funnel.order_bump_offer_id)
        amount += bump.price_cents if bump else 0
    _charge_offer(bot, lead, offer, amount, tap)


def _charge_offer(bot: Bot, lead: Lead, offer: Offer, amount_cents: int, tap: str) -> None:
    """Charge on the gateway queue; keyed by the tap, so a retried tap charges once."""
    source = f"offer:{offer.id}:{tap}"
    enqueue(GATEWAY, create_charge, bot.id, lead.id, source, offer.id, amount_cents, None)


def downsell_tapped(bot: Bot, lead: Lead, payment_id: int, position: int) -> None:
    with get_db().session() as session:
        original = session.get(Payment, payment_id)
        funnel = load_funnel(session, bot.funnel_id)
    if original is None or original.lead_id != lead.id or funnel is None:
        return
    downsell = _downsell_at(funnel, position)
    if downsell is None:
        return
    enqueue(
        GATEWAY,
        create_charge,
        bot.id,
        lead.id,
        f"downsell:{payment_id}:{position}",
        original.offer_id,
        downsell.price_cents,
        position,
    )


def create_charge(
    bot_id: int,
    lead_id: int,
    source: str,
    offer_id: int | None,
    amount_cents: int,
    downsell_position: int | None,
) -> int | None:
    """Job (gateway queue): charge through the gateway, send the PIX code, schedule downsells."""
    from grimbots.payments import charge_pending, create_payment

    db = get_db()
    with db.session() as session:
        bot = session.get(Bot, bot_id)
        lead = session.get(Lead, lead_id)
        if bot is None or lead is None:
            return None
        generation = lead.funnel_generation
        payment = create_payment(
            session,
            bot=bot,
            lead=lead,
            amount_cents=amount_cents,
            idempotency_key=f"charge:{bot_id}:{lead_id}:{source}",
            offer_id=offer_id,
            downsell_position=downsell_position,
            description=f"{bot.username} {source}",
        )
        payment_id, pix_code = payment.id, payment.pix_code
        funnel = load_funnel(session, bot.funnel_id)
    text = (
        f"Pedido de {brl(amount_cents)} gerado!\n\n"
        "Copie o código PIX abaixo e pague no app do seu banco:\n\n"
        f"{pix_code}\n\nAssim que o pagamento for confirmado, você recebe o acesso aqui."
    )
    # The customer may have paid (or the charge expired) since: a retried or delayed job must
    # not send the code then. Asked under the fence's lock, so no race with the payment webhook.
    outbox.send(
        bot,
        lead.chat_id,
        f"pix:{payment_id}",
        "sendMessage",
        {"text": text},
        lead_id=lead.id,
        guard=charge_pending(payment_id),
    )
    # Downsells follow an unpaid main-offer charge; a downsell charge continues the chain.
    next_position = 0 if downsell_position is None else downsell_position + 1
    if funnel is not None and _downsell_at(funnel, next_position) is not None:
        root = payment_id if downsell_position is None else _root_payment(source, payment_id)
        if _claim_chain(lead_id, root, generation):
            delay = _downsell_at(funnel, next_position).delay_minutes
            enqueue_in(
                TASKS, timedelta(minutes=delay), run_downsell, root, next_position, generation
            )
    return payment_id


def _root_payment(source: str, fallback: int) -> int:
    parts = source.split(":")
    return int(parts[1]) if parts[0] == "downsell" and len(parts) == 3 else fallback


def _claim_chain(lead_id: int, root_id: int, generation: int) -> bool:
    """One downsell chain per lead and funnel generation: the first charge to claim it owns it;
    a second charge (another tap, another offer) starts no second chain."""
    with get_db().session() as session:
        claimed = session.execute(
            update(Lead)
            .where(
                Lead.id == lead_id,
                Lead.funnel_generation == generation,
                or_(Lead.downsell_root_id.is_(None), Lead.downsell_root_id == root_id),
            )
            .values(downsell_root_id=root_id)
        ).rowcount
    return claimed == 1


def run_downsell(payment_id: int, position: int, generation: int) -> str:
    """Job (tasks queue, scheduled): offer a cheaper price if the lead still has not paid.

    Read on the primary, never a standby: a lagging standby would say "not paid" after payment.
    """
    with get_db().session() as session:
        payment = session.get(Payment, payment_id)
        if payment is None:
            return "missing"
        lead = session.get(Lead, payment.lead_id)
        bot = session.get(Bot, payment.bot_id)
        funnel = load_funnel(session, bot.funnel_id) if bot else None
    if lead is None or bot is None or funnel is None:
        return "missing"
    if not _downsell_due(lead.id, generation):
        return "cancelled"
    if lead.downsell_root_id is not None and lead.downsell_root_id != payment_id:
        return "superseded"  # another charge owns this lead's chain
    downsell = _downsell_at(funnel, position)
    if downsell is None:
        return "missing"
    text = downsell.text or f"Última chance: leve por apenas {brl(downsell.price_cents)}!"
    markup = {
        "inline_keyboard": [
            [
                {
                    "text": f"Quero por {brl(downsell.price_cents)}",
                    "callback_data": f"ds:{payment_id}:{position}",
                }
            ]
        ]
    }
    status = outbox.send(
        bot,
        lead.chat_id,
        f"downsell:{payment_id}:{position}",
        "sendMessage",
        {"text": text[:TEXT_LIMIT], "reply_markup": markup},
        lead_id=lead.id,
        # Asked again after the rate limiter's wait (up to 30 s), right before the request,
        # and then under the fence's lock (a payment landing between the two).
        still_due=lambda: _downsell_due(lead.id, generation),
        guard=_downsell_still_due(lead.id, generation),
    )
    following = _downsell_at(funnel, position + 1)
    if status == outbox.SENT and following is not None:
        enqueue_in(
            TASKS,
            timedelta(minutes=following.delay_minutes),
            run_downsell,
            payment_id,
            position + 1,
            generation,
        )
    return status


def _downsell_due(lead_id: int, generation: int) -> bool:
    """A downsell is due while its lead has not paid, not blocked the bot and not restarted the
    funnel. Read on the primary: a lagging standby would say "not paid" after payment."""
    with get_db().session() as session:
        return _due_in(session, lead_id, generation, lock=False)


def _downsell_still_due(lead_id: int, generation: int) -> outbox.Guard:
    """_downsell_due inside the outbox's fence transaction, the lead's row locked: the payment
    webhook marks the lead paid in the transaction that flips the charge, so that transaction
    lands wholly before or after the decision to send."""
    return lambda session: _due_in(session, lead_id, generation, lock=True)


def _due_in(session, lead_id: int, generation: int, *, lock: bool) -> bool:
    query = select(Lead).where(Lead.id == lead_id)
    lead = session.scalar(query.with_for_update() if lock else query)
    paid = session.scalar(
        select(Payment.id).where(Payment.lead_id == lead_id, Payment.status == "paid").limit(1)
    )
    return not (
        lead is None or paid or lead.paid or lead.blocked or lead.funnel_generation != generation
    )


def deliver_access(payment_id: int) -> str:
    """Job (tasks queue): send the access link of a paid charge, once.

    Read on the primary, never a standby: a lagging standby would say "not paid" and the
    customer would never be served. delivered_at is set only when the link certainly went out
    (sent now or before); an ambiguous, refused or blocked send is left to the operator, and
    the payments reconciler skips it. An inactive bot sends nothing: the delivery is held.
    """
    with get_db().session() as session:
        payment = session.get(Payment, payment_id)
        if payment is None or payment.status != "paid":
            return "not paid"
        lead = session.get(Lead, payment.lead_id)
        bot = session.get(Bot, payment.bot_id)
        funnel = load_funnel(session, bot.funnel_id) if bot else None
    if lead is None or bot is None:
        return "missing"
    if not bot.active:
        # Held, not lost: reactivating the bot (reconcile.resume_bot, or the payments
        # reconciler, which skips inactive bots) enqueues this job again.
        return "held"
    link = funnel.access_link if funnel else ""
    text = f"Pagamento confirmado! ✅\n\nSeu acesso: {link}" if link else "Pagamento confirmado! ✅"
    status = outbox.send(
        bot, lead.chat_id, f"delivery:{payment_id}", "sendMessage", {"text": text}, lead_id=lead.id
    )
    if status in (outbox.SENT, outbox.DUPLICATE):
        with get_db().session() as session:
            session.execute(
                update(Payment)
                .where(Payment.id == payment_id, Payment.delivered_at.is_(None))
                .values(delivered_at=utcnow())
            )
    return status


def _offer_of(funnel: Funnel | None, offer_id: int | None) -> Offer | None:
    if funnel is None or offer_id is None:
        return None
    return next((o for o in funnel.offers if o.id == offer_id), None)


def _downsell_at(funnel: Funnel, position: int) -> Downsell | None:
    ordered = sorted(funnel.downsells, key=lambda d: (d.position, d.id))
    return ordered[position] if 0 <= position < len(ordered) else None
