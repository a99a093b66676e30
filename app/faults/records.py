"""What a scenario run records: the updates it delivered, the bots, and the observation the
invariants are checked against."""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass
class Sent:
    """An update the harness delivered, with every answer it got."""

    update_id: int
    lead: int
    kind: str  # start, tap, bump, block
    body: dict
    answers: list[int] = field(default_factory=list)
    duplicate: list[str] = field(default_factory=list)  # the dedup layer a 200 named, if any

    @property
    def accepted(self) -> bool:
        return any(200 <= a < 300 for a in self.answers)


@dataclass
class BotCtx:
    """One seller's bot in a scenario (several with `several_sellers`)."""

    bot_id: int
    token: str
    secret: str
    api_token: str
    offers: list[int]
    welcome_text: str


@dataclass
class Observation:
    """What the invariants are checked against (besides the fake's record and the database)."""

    token: str
    bot_id: int
    chats: dict[int, int]  # lead index -> chat id
    updates: list[Sent]
    welcome_content: tuple[str, str]
    paid_at: dict[int, float]  # chat id -> wall time the payment was confirmed (flipped)
    blocked: set[int]
    campaign_texts: dict[int, str]
    campaign_audience: dict[int, set[int]]
    refused_payments: list[str]
    campaign_refused: list[str]
    notes: list[str]
    redis_url: str
    backend: str
    paused: list[tuple[float, float]] = field(default_factory=list)
    hold_ends: list[tuple[float, float]] = field(default_factory=list)
    go_answers: list[int] = field(default_factory=list)
    go_tokens: list[str] = field(default_factory=list)
    malformed: list[tuple[int, int, bool]] = field(default_factory=list)
    foreign_chats: set[int] = field(default_factory=set)  # other sellers' leads
    tenancy: list[tuple[str, int]] = field(default_factory=list)
    rate_resets: list[tuple[float, str]] = field(default_factory=list)  # (when, window) lost
    # payment id -> wall time the harness first saw it paid (after its webhook answered)
    payment_paid_at: dict[int, float] = field(default_factory=dict)
