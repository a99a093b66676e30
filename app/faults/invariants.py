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
from faults.scenario import LONG_RETRY_AFTER
from grimbots.models import Campaign, Click, InboundUpdate, Lead, OutboundMessage, Payment

SEND_METHODS = {"sendMessage", "sendPhoto", "sendVideo", "sendDocument", "sendAnimation"}
BOT_RATE, CHAT_RATE = 30, 1
# Telegram's documented windows, measured on the fake's arrival stamps: what reaches Telegram.
RATE_WINDOW = 1.0
DELIVERY_PREFIX = "Pagamento confirmado"
DOWNSELL_PREFIX = "Desconto "
LONG_429 = f"retry after {LONG_RETRY_AFTER}"
CAPTION_LIMIT = 1024
WELCOME_MEDIA = "https://example.com/welcome.jpg"


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


def _cuts(obs, window: str) -> list[float]:
    return sorted(t for t, w in getattr(obs, "rate_resets", ()) if w == window)


def peak(times: list[float], cuts: list[float]) -> tuple[int, float]:
    """max_in_window over each stretch between cuts: a failover that lost the limiter's window
    (redis_data_loss) makes it forget the sends before; a send after it is judged anew, as a
    limiter can only be, and Telegram's 429 for it is honoured like any other."""
    best, at = 0, 0.0
    for lo, hi in zip([float("-inf"), *cuts], [*cuts, float("inf")], strict=True):
        n, start = max_in_window([t for t in times if lo <= t < hi], RATE_WINDOW)
        if n > best:
            best, at = n, start
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
    welcome = welcome_keys(*obs.welcome_content)
    starts = Counter(str(obs.chats[u.lead]) for u in obs.updates if u.kind == "start")
    for chat, n in starts.items():
        for key in welcome:
            expect("welcome", chat, key, n)

    with db.session() as session:
        payments = session.execute(
            select(Payment, Lead.chat_id)
            .join(Lead, Lead.id == Payment.lead_id)
            .where(Payment.bot_id == obs.bot_id)
        ).all()
        campaigns = session.scalars(select(Campaign).where(Campaign.bot_id == obs.bot_id)).all()

    # 2. Each charge: exactly one PIX code message, none after the charge was paid (a charge
    # paid before its code went out needs none); each paid order: exactly one delivery.
    paid_per_chat: Counter = Counter()
    paid_seen = getattr(obs, "payment_paid_at", {})
    for payment, chat_id in payments:
        chat = str(chat_id)
        pix = [k for k in per_chat[chat] if payment.pix_code in k[1]]
        got = sum(per_chat[chat][k] for k in pix)
        unsure = sum(n for (ch, k), n in unknown.items() if ch == chat and payment.pix_code in k[1])
        paid = paid_seen.get(payment.id)
        if got > 1:
            out.append(Violation("duplicate PIX message", f"payment {payment.id}: {got}"))
        elif got == 0 and chat not in blocked and not unsure and paid is None:
            out.append(Violation("lost PIX message", f"payment {payment.id} chat {chat}"))
        late = [
            arrival(c)
            for c in sent
            if c["chat_key"] == chat and payment.pix_code in _body(c)
            if paid is not None and arrival(c) > paid
        ]
        if late:
            out.append(
                Violation(
                    "PIX code after payment",
                    f"payment {payment.id}: {late[0] - paid:.2f} s after it was paid",
                )
            )
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

    # 3. No chat gets two copies of one message (welcomes are counted per /start in 1.).
    for chat, keys in per_chat.items():
        for key, n in keys.items():
            if n > 1 and key not in welcome:
                out.append(
                    Violation("duplicate message", f"chat {chat}: {n} x {key[0]} {key[1][:40]!r}")
                )

    # 4. Telegram's limits, measured at the fake: 30/s per bot, 1/s per chat, in any window
    # that no Redis data loss cut (the limiter's memory of a window starts anew there).
    times = [arrival(c) for c in sent]
    n, at = peak(times, _cuts(obs, f"bot:{obs.bot_id}"))
    if n > BOT_RATE:
        out.append(Violation("bot rate over 30/s", f"{n} sends in {RATE_WINDOW} s from {at:.3f}"))
    by_chat: dict[str, list[float]] = defaultdict(list)
    for c in sent:
        by_chat[c["chat_key"]].append(arrival(c))
    for chat, ts in by_chat.items():
        n, at = peak(ts, _cuts(obs, chat))
        if n > CHAT_RATE:
            out.append(
                Violation("chat rate over 1/s", f"chat {chat}: {n} sends within {RATE_WINDOW} s")
            )

    # 5. No downsell after the payment was confirmed, nor after the access link went out.
    delivered: dict[str, float] = {}
    for c in sent:
        if _body(c).startswith(DELIVERY_PREFIX):
            delivered.setdefault(c["chat_key"], arrival(c))
        elif _body(c).startswith(DOWNSELL_PREFIX) and c["chat_key"] in delivered:
            out.append(
                Violation(
                    "downsell after the access link", f"chat {c['chat_key']}: {_body(c)[:30]!r}"
                )
            )
    for c in sent:
        paid = obs.paid_at.get(int(c["chat_key"])) if c["chat_key"].lstrip("-").isdigit() else None
        if paid is not None and _body(c).startswith(DOWNSELL_PREFIX) and arrival(c) > paid:
            out.append(
                Violation(
                    "downsell after payment",
                    f"chat {c['chat_key']}: {_body(c)[:30]!r} {arrival(c) - paid:.2f} s after",
                )
            )

    out += _held_sends(obs, mine, sent)
    out += _clicks(obs, db)
    out += _tenancy(obs, sent)

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


def welcome_keys(text: str, method: str) -> tuple[tuple, ...]:
    """The messages of one welcome: a media welcome whose text is over Telegram's caption limit
    is the media alone, then the text as its own message (each exactly once per /start)."""
    if method == "sendMessage":
        return ((method, text, ""),)
    if len(text) > CAPTION_LIMIT:
        return ((method, "", WELCOME_MEDIA), ("sendMessage", text, ""))
    return ((method, text, WELCOME_MEDIA),)


def _held_sends(obs, mine: list[dict], sent: list[dict]) -> list[Violation]:
    """7. Nothing goes out while it must be held: no delivery while the bot is inactive, and
    no send of the bot between a 429 with a long retry_after and the end of that hold (which
    ends only as the harness lets time pass: `obs.hold_ends`, each (when it aged the hold, the
    wall time the hold then ends); the earliest end recorded after the 429 counts)."""
    out = []
    for start, end in getattr(obs, "paused", ()):
        for c in sent:
            if _body(c).startswith(DELIVERY_PREFIX) and start <= arrival(c) <= end:
                out.append(Violation("delivery while bot inactive", f"chat {c['chat_key']}"))
    long_429 = [
        arrival(c)
        for c in mine
        if c["status"] == 429 and c.get("fault") and LONG_429 in str(c.get("description"))
    ]
    hold_ends = list(getattr(obs, "hold_ends", ()))
    for t in long_429:
        end = min((e for at, e in hold_ends if at > t), default=float("inf"))
        early = [c for c in sent if t < arrival(c) < end]
        if early:
            out.append(
                Violation(
                    "send during a 429 hold",
                    f"{len(early)} sends, first {arrival(early[0]) - t:.2f} s after the 429",
                )
            )
    return out


def _tenancy(obs, sent: list[dict]) -> list[Violation]:
    """9. Several sellers: no lead hears from a bot it never talked to, and another seller's
    API token or webhook secret is refused (4xx) on this seller's bot."""
    foreign = {str(c) for c in getattr(obs, "foreign_chats", ())}
    out = [
        Violation("message to another seller's lead", f"chat {c['chat_key']}: {_body(c)[:30]!r}")
        for c in sent
        if c["chat_key"] in foreign
    ]
    for what, status in getattr(obs, "tenancy", ()):
        if not 400 <= status < 500:
            out.append(Violation("another seller reached the bot", f"{what}: {status}"))
    return out


def _clicks(obs, db) -> list[Violation]:
    """8. A /go click never answers 5xx, and each token it handed out has its click row; a
    signed malformed gateway body is answered 400 and pays nothing."""
    out = [
        Violation("/go answered 5xx", str(s)) for s in getattr(obs, "go_answers", ()) if s >= 500
    ]
    tokens = list(getattr(obs, "go_tokens", ()))
    if tokens:
        with db.session() as session:
            found = set(session.scalars(select(Click.token).where(Click.token.in_(tokens))).all())
        out += [Violation("click not recorded", t) for t in tokens if t not in found]
    for body, status, paid in getattr(obs, "malformed", ()):
        if status != 400:
            out.append(Violation("malformed gateway body not answered 400", f"#{body}: {status}"))
        if paid:
            out.append(Violation("paid by a malformed gateway body", f"#{body}"))
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
