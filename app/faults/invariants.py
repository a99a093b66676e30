"""The delivery invariants, checked after every scenario against what the fake Telegram
recorded (successful sends, with their times) and the primary database.

Exactly once, except where the app cannot know: a send whose answer never came back and that
Telegram did not deliver (an injected timeout before delivery) is "at most once", because a
send that may have reached Telegram must never be repeated blindly. A chat whose user blocked
the bot gets at most one of anything.
"""

from __future__ import annotations

from collections import Counter, defaultdict
from dataclasses import dataclass

from sqlalchemy import select

from faults.lane import TELEGRAM_TIMEOUT
from grimbots.models import Campaign, InboundUpdate, Lead, OutboundMessage, Payment

SEND_METHODS = {"sendMessage", "sendPhoto", "sendVideo", "sendDocument", "sendAnimation"}
BOT_RATE, CHAT_RATE = 30, 1
# Windows are measured on the fake's arrival stamps; the client's own scheduling jitter between
# its limiter's decision and the request's arrival (a loaded 2-core machine) stays under this.
WINDOW_SLACK = 0.15
DELIVERY_PREFIX = "Pagamento confirmado"
DOWNSELL_PREFIX = "Desconto "


@dataclass(frozen=True)
class Violation:
    invariant: str
    detail: str

    def __str__(self) -> str:
        return f"{self.invariant}: {self.detail}"


def content_key(call: dict) -> tuple:
    params = call.get("params") or {}
    media = params.get("photo") or params.get("video") or params.get("document") or ""
    return (call["method"], params.get("text") or params.get("caption") or "", str(media))


def arrival(call: dict) -> float:
    """When the send reached Telegram (the fake stamps arrival before any injected delay)."""
    return call.get("received", call["time"])


def _body(call: dict) -> str:
    params = call.get("params") or {}
    return str(params.get("text") or params.get("caption") or "")


def max_in_window(times: list[float], window: float) -> tuple[int, float]:
    """The most events in any half-open window of this length, and where it starts."""
    best, at, j = 0, 0.0, 0
    for i, t in enumerate(times):
        while times[j] <= t - window:
            j += 1
        if i - j + 1 > best:
            best, at = i - j + 1, times[j]
    return best, at


def check(obs, calls: list[dict], db) -> list[Violation]:
    """Every invariant; an empty list means the scenario kept every promise."""
    out: list[Violation] = []
    mine = [c for c in calls if c["token"] == obs.token and c["method"] in SEND_METHODS]
    sent = sorted((c for c in mine if c["status"] == 200), key=arrival)
    # Sends the client gave up on (timeout) that Telegram did not deliver: the app cannot know.
    unknown = Counter(
        (c["chat_key"], content_key(c))
        for c in mine
        if c["status"] != 200 and c.get("delay", 0) >= TELEGRAM_TIMEOUT
    )
    per_chat: dict[str, Counter] = defaultdict(Counter)
    for c in sent:
        per_chat[c["chat_key"]][content_key(c)] += 1
    blocked = {str(c) for c in obs.blocked}

    def expect(what: str, chat: str, key: tuple, want: int) -> None:
        got = per_chat[chat][key]
        if got > want:
            out.append(Violation(f"duplicate {what}", f"chat {chat} got {got}, want {want}"))
        elif got < want and chat not in blocked and got + unknown[(chat, key)] < want:
            out.append(Violation(f"lost {what}", f"chat {chat} got {got}, want {want}"))

    # Every update must end accepted: Telegram redelivers what was answered non-2xx.
    for u in obs.updates:
        if not u.accepted:
            out.append(Violation("update refused for good", f"{u.kind} {u.update_id}: {u.answers}"))
    for txid in obs.refused_payments:
        out.append(Violation("payment webhook refused for good", txid))
    for text in obs.campaign_refused:
        out.append(Violation("campaign never started", text))

    # 1. Each /start (distinct update) answered 200 gets exactly one welcome.
    welcome_text, welcome_method = obs.welcome_content
    welcome_key = (welcome_method, welcome_text, "https://example.com/welcome.jpg")
    if welcome_method == "sendMessage":
        welcome_key = (welcome_method, welcome_text, "")
    starts = Counter(str(obs.chats[u.lead]) for u in obs.updates if u.kind == "start")
    for chat, n in starts.items():
        expect("welcome", chat, welcome_key, n)

    with db.session() as session:
        payments = session.execute(
            select(Payment, Lead.chat_id)
            .join(Lead, Lead.id == Payment.lead_id)
            .where(Payment.bot_id == obs.bot_id)
        ).all()
        campaigns = session.scalars(select(Campaign).where(Campaign.bot_id == obs.bot_id)).all()

    # 2. Each charge: exactly one PIX code message; each paid order: exactly one delivery.
    paid_per_chat: Counter = Counter()
    for payment, chat_id in payments:
        chat = str(chat_id)
        pix = [k for k in per_chat[chat] if payment.pix_code in k[1]]
        got = sum(per_chat[chat][k] for k in pix)
        unsure = sum(n for (ch, k), n in unknown.items() if ch == chat and payment.pix_code in k[1])
        if got > 1:
            out.append(Violation("duplicate PIX message", f"payment {payment.id}: {got}"))
        elif got == 0 and chat not in blocked and not unsure:
            out.append(Violation("lost PIX message", f"payment {payment.id} chat {chat}"))
        if payment.status == "paid":
            paid_per_chat[chat] += 1
    for chat in set(paid_per_chat) | {k for k, v in per_chat.items() if _deliveries(v)}:
        got = _deliveries(per_chat[chat])
        want = paid_per_chat[chat]
        unsure = sum(
            n for (ch, k), n in unknown.items() if ch == chat and k[1].startswith(DELIVERY_PREFIX)
        )
        if got > want:
            out.append(Violation("duplicate delivery", f"chat {chat}: {got} for {want} paid"))
        elif got < want and chat not in blocked and got + unsure < want:
            out.append(Violation("paid order not delivered", f"chat {chat}: {got} for {want} paid"))

    # 3. No chat gets two copies of one message (welcomes: one per /start).
    for chat, keys in per_chat.items():
        for key, n in keys.items():
            allowed = starts.get(chat, 0) if key == welcome_key else 1
            if n > max(allowed, 1) and key != welcome_key:
                out.append(
                    Violation("duplicate message", f"chat {chat}: {n} x {key[0]} {key[1][:40]!r}")
                )

    # 4. Telegram's limits, measured at the fake: 30/s per bot, 1/s per chat, in any window.
    times = [arrival(c) for c in sent]
    n, at = max_in_window(times, 1.0 - WINDOW_SLACK)
    if n > BOT_RATE:
        out.append(
            Violation("bot rate over 30/s", f"{n} sends in {1 - WINDOW_SLACK:.1f} s from {at:.3f}")
        )
    by_chat: dict[str, list[float]] = defaultdict(list)
    for c in sent:
        by_chat[c["chat_key"]].append(arrival(c))
    for chat, ts in by_chat.items():
        n, at = max_in_window(ts, 1.0 - WINDOW_SLACK)
        if n > CHAT_RATE:
            out.append(
                Violation(
                    "chat rate over 1/s", f"chat {chat}: {n} sends within {1 - WINDOW_SLACK:.1f} s"
                )
            )

    # 5. No downsell after the payment was confirmed.
    for c in sent:
        paid = obs.paid_at.get(int(c["chat_key"])) if c["chat_key"].lstrip("-").isdigit() else None
        if paid is not None and _body(c).startswith(DOWNSELL_PREFIX) and arrival(c) > paid:
            out.append(
                Violation(
                    "downsell after payment",
                    f"chat {c['chat_key']}: {_body(c)[:30]!r} {arrival(c) - paid:.2f} s after",
                )
            )

    # 6. Every campaign ends, and reaches each of its audience once.
    for campaign in campaigns:
        if campaign.status == "draft":
            out.append(
                Violation(
                    "campaign created twice",
                    f"campaign {campaign.id} left as a draft by a retried create",
                )
            )
        elif campaign.status not in ("finished", "stopped"):
            out.append(
                Violation("campaign never ended", f"campaign {campaign.id} is {campaign.status}")
            )
        text = obs.campaign_texts.get(campaign.id)
        for chat_id in obs.campaign_audience.get(campaign.id, ()):
            if text is not None:
                expect("campaign message", str(chat_id), ("sendMessage", text, ""), 1)

    return out


def inbound_rows(obs, db) -> list[str]:
    """The scenario's inbound updates as the workers left them (for a failing report)."""
    with db.session() as session:
        rows = session.scalars(
            select(InboundUpdate)
            .where(InboundUpdate.bot_id == obs.bot_id)
            .order_by(InboundUpdate.id)
        ).all()
    return [f"{r.update_id} {r.kind} processed={r.processed_at is not None}" for r in rows]


def outbox_rows(obs, db) -> list[str]:
    """The scenario's outbox rows and how they ended (a note for a failing scenario's report)."""
    with db.session() as session:
        rows = session.scalars(
            select(OutboundMessage)
            .where(OutboundMessage.bot_id == obs.bot_id)
            .order_by(OutboundMessage.id)
        ).all()
    return [
        f"{r.idempotency_key} {r.status} attempts={r.attempts}"
        + (f" error={r.error[:60]!r}" if r.error else "")
        for r in rows
    ]


def _deliveries(keys: Counter) -> int:
    return sum(n for k, n in keys.items() if k[1].startswith(DELIVERY_PREFIX))
