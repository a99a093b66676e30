"""Scenarios generated from a seed: customer journeys interleaved with faults.

A scenario is data (so it can be printed, replayed and written into a finding): the backend,
the funnel's shape, the leads' journeys as a flat list of actions, and the faults attached to
actions. The same (seed, index, kinds) always gives the same scenario.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field

from faults.lane import TELEGRAM_TIMEOUT

TELEGRAM_KINDS = (
    "telegram_5xx",
    "telegram_429",
    "telegram_403",
    "telegram_timeout_before",
    "telegram_timeout_after",
)
KINDS = (
    *TELEGRAM_KINDS,
    "redis_error",
    "redis_timeout",
    "db_commit_lost",
    "standby_lag",
    "worker_kill",
    "db_outage",
    "double_run",
    "telegram_429_long",
    "bot_paused",
    "pay_during_downsell",
    "hostile_go",
    "update_id_low",
    "gateway_malformed",
    "long_caption",
    "several_sellers",
    "redis_data_loss",
    "pay_before_pix",
)
# Drawn apart from the others, from their own random stream, so adding them left every other
# scenario of a seed as it was (only the scenarios they are drawn for change).
EXTRA_KINDS = (
    "db_outage",
    "double_run",
    "telegram_429_long",
    "bot_paused",
    "pay_during_downsell",
    "hostile_go",
    "update_id_low",
    "gateway_malformed",
    "long_caption",
    "several_sellers",
    "redis_data_loss",
    "pay_before_pix",  # last: appended, so every earlier kind's draws stay as they were
)
# Played on a drain inserted right after a /start or an offer tap, so the drain has a job to run.
DRAIN_EXTRAS = ("db_outage", "double_run", "telegram_429_long", "redis_data_loss")
EXTRA_RATE = 0.1
# Longer than RQ's whole retry budget (DEFAULT_RETRY: 2+10+30+60+120 s = 222 s).
LONG_RETRY_AFTER = 600
# Signed malformed gateway bodies (faults.inputs): each scenario posts three of them.
MALFORMED_BODIES = 11
# Hostile query strings on a /go click: NUL, control characters, bad UTF-8, huge and repeated.
HOSTILE_QUERIES = (
    "utm_source=a%00b&utm_campaign=%00%00&fbclid=x%00",
    "utm_source=%01%02%1b%5B31m&utm_medium=%7f%09%0d%0a&utm_term=%ff%fe%c3",
    "utm_source=" + "x" * 9000 + "&fbclid=" + "%F0%9F%98%80" * 600,
    "&".join(f"utm_source=s{i}&fbclid=f{i}" for i in range(60)) + "&utm_content=&=&&",
)
# How often each kind is drawn (a worker kill costs a subprocess, so it is rarer).
# Actions whose faults hit the webhook intake (Telegram's or the gateway's request).
INTAKE_OPS = ("start", "twin", "tap", "bump", "block", "pay", "pay_twin")
WEIGHTS = {kind: 1.0 for kind in KINDS} | {"worker_kill": 0.35}


@dataclass
class Fault:
    kind: str
    params: dict

    def __str__(self) -> str:
        args = ", ".join(f"{k}={v}" for k, v in self.params.items())
        return f"{self.kind}({args})"


@dataclass
class Action:
    op: str  # start, twin, tap, bump, drain, later, pay, pay_twin, campaign, block
    lead: int | None = None
    arg: object = None
    faults: list[Fault] = field(default_factory=list)

    def __str__(self) -> str:
        head = self.op if self.lead is None else f"{self.op}(lead {self.lead}"
        if self.lead is not None:
            head += f", {self.arg})" if self.arg is not None else ")"
        elif self.arg is not None:
            head += f"({self.arg})"
        return head + "".join(f" +{f}" for f in self.faults)


@dataclass
class Scenario:
    seed: int
    index: int
    backend: str
    kinds: tuple[str, ...]
    media: bool
    downsells: int
    bump: bool
    leads: list[int]
    crowd: int
    actions: list[Action]
    bots: int = 1  # several_sellers: each of 2-3 sellers has a bot; lead i talks to bot i % bots

    def bot_of(self, lead: int) -> int:
        return lead % self.bots

    @property
    def name(self) -> str:
        return f"seed={self.seed} index={self.index}"

    @property
    def lagging_reads(self) -> bool:
        return "standby_lag" in self.kinds

    def describe(self) -> str:
        lines = [
            f"scenario {self.name}: backend={self.backend} kinds={','.join(self.kinds) or '-'}",
            f"  funnel: media={self.media} downsells={self.downsells} bump={self.bump}; "
            f"leads={len(self.leads)} crowd={self.crowd} bots={self.bots}",
        ]
        lines += [f"  {i:>2}. {a}" for i, a in enumerate(self.actions)]
        return "\n".join(lines)


def _journey(rng: random.Random, lead: int, bump: bool, downsells: int) -> list[Action]:
    ops = [Action("start", lead)]
    if rng.random() < 0.3:
        # Telegram delivers the update again, sometimes several copies at once.
        ops.append(Action("twin", lead, rng.choice((1, 1, 3))))
    if rng.random() < 0.15:
        # A second /start later: the funnel resets and the welcome is sent again.
        ops += [Action("later", arg=30), Action("start", lead)]
    if rng.random() < 0.1:
        ops.append(Action("block", lead))
        return ops
    if rng.random() < 0.8:
        ops.append(Action("tap", lead, rng.randrange(2)))
        if rng.random() < 0.25:
            ops.append(Action("twin", lead, rng.choice((1, 1, 3))))
        if bump:
            ops.append(Action("bump", lead, rng.random() < 0.5))
        elif rng.random() < 0.1:
            ops.append(Action("tap", lead, rng.randrange(2)))  # a second offer: a second charge
        ops += [Action("later", arg=300) for _ in range(rng.randint(0, downsells))]
        if rng.random() < 0.65:
            ops.append(Action("pay", lead))
            if rng.random() < 0.3:
                ops.append(Action("pay_twin", lead))
            ops.append(Action("later", arg=600))  # downsells due after payment must not go out
    return ops


def _interleave(rng: random.Random, journeys: list[list[Action]]) -> list[Action]:
    out: list[Action] = []
    queues = [list(j) for j in journeys]
    while any(queues):
        q = rng.choice([q for q in queues if q])
        out.append(q.pop(0))
        if rng.random() < 0.6:
            out.append(Action("drain"))
    out.append(Action("drain"))
    return out


def _fault(rng: random.Random, kind: str, leads: list[int], at_intake: bool) -> Fault:
    slow = round(TELEGRAM_TIMEOUT + 0.4, 2)
    if kind == "telegram_5xx":
        return Fault(
            kind,
            {
                "status": rng.choice((500, 502, 503)),
                "method": rng.choice((None, "sendMessage", "sendPhoto")),
                "count": rng.choice((1, 2, 3, 6, 12)),
            },
        )
    if kind == "telegram_429":
        return Fault(
            kind,
            {
                "status": 429,
                "retry_after": rng.choice((1, 1, 2)),
                "method": rng.choice((None, "sendMessage")),
                "count": rng.choice((1, 2, 4)),
            },
        )
    if kind == "telegram_403":
        return Fault(kind, {"lead": rng.randrange(len(leads))})
    if kind == "telegram_timeout_before":
        return Fault(
            kind, {"status": 502, "delay": slow, "method": None, "count": rng.choice((1, 2))}
        )
    if kind == "telegram_timeout_after":
        return Fault(
            kind, {"status": None, "delay": slow, "method": None, "count": rng.choice((1, 2))}
        )
    # An intake request makes a handful of Redis calls, a worker pass dozens.
    after = rng.randrange(6) if at_intake else rng.randrange(60)
    if kind == "redis_error":
        return Fault(kind, {"after": after, "count": rng.choice((1, 2, 3, 12, 30))})
    if kind == "redis_timeout":
        return Fault(kind, {"after": after, "count": rng.choice((1, 1, 2, 12))})
    if kind == "db_commit_lost":
        return Fault(kind, {"at": rng.randrange(8)})
    if kind == "worker_kill":
        return Fault(kind, {"kill_after": round(rng.uniform(1.2, 3.5), 2), "slow": 2.0})
    raise ValueError(kind)


def generate(seed: int, index: int, kinds: tuple[str, ...] = KINDS) -> Scenario:
    rng = random.Random(f"grimbots-faults:{seed}:{index}")
    n_kinds = 1 if rng.random() < 0.6 else 2
    chosen: list[str] = []
    pool = [k for k in kinds if k not in EXTRA_KINDS]
    if pool:
        for _ in range(n_kinds):
            kind = rng.choices(pool, weights=[WEIGHTS[k] for k in pool])[0]
            if kind not in chosen:
                chosen.append(kind)
    backend = "postgres" if "db_commit_lost" in chosen or rng.random() < 0.75 else "sqlite"
    downsells = rng.randint(0, 2)
    bump = rng.random() < 0.2
    leads = [rng.randrange(10**6, 10**9) for _ in range(rng.randint(1, 3))]
    actions = _interleave(rng, [_journey(rng, i, bump, downsells) for i in range(len(leads))])
    crowd = 0
    if rng.random() < 0.25:
        # One or two broadcasts at once, drained by one worker or by several in parallel.
        crowd = rng.choice((5, 20, 60, 100))
        pos = rng.randrange(len(actions) + 1)
        workers = rng.choice((1, 1, 3))
        actions[pos:pos] = [
            Action("campaign", arg=rng.choice((1, 1, 2))),
            Action("drain", arg=workers),
        ]
    for kind in chosen:
        if kind == "standby_lag":
            continue  # a property of the whole scenario: reads go to a copy that lags
        candidates = [i for i, a in enumerate(actions) if _fits(kind, a)]
        if not candidates:
            continue
        for _ in range(rng.choice((1, 1, 2))):
            action = actions[rng.choice(candidates)]
            at_intake = action.op in INTAKE_OPS
            action.faults.append(_fault(rng, kind, leads, at_intake))
    media = rng.random() < 0.7
    scenario = Scenario(
        seed, index, backend, tuple(chosen), media, downsells, bump, leads, crowd, actions,
    )  # fmt: skip
    extra = _extras(scenario, kinds, EXTRA_RATE if pool else 1.0)
    scenario.kinds = (*chosen, *extra)
    return scenario


def _extras(s: Scenario, kinds, rate: float) -> list[str]:
    """The extra kinds of this scenario, from their own random stream (see EXTRA_KINDS)."""
    rng = random.Random(f"grimbots-faults-extra:{s.seed}:{s.index}")
    chosen = []
    for kind in EXTRA_KINDS:
        if kind not in kinds or rng.random() >= rate:
            continue
        if kind == "several_sellers":
            _several_sellers(rng, s)
            chosen.append(kind)
        elif _place_extra(rng, kind, s.actions, s.downsells, s.bump):
            chosen.append(kind)
    return chosen


def _several_sellers(rng: random.Random, s: Scenario) -> None:
    """2-3 sellers, a bot each, their leads' journeys interleaved: a lead joins if a bot would
    have none (lead i talks to bot i % bots)."""
    s.bots = rng.choice((2, 3))
    while len(s.leads) < s.bots:
        lead = len(s.leads)
        s.leads.append(rng.randrange(10**6, 10**9))
        _merge(rng, s.actions, _journey(rng, lead, s.bump, s.downsells))


def _merge(rng: random.Random, actions: list[Action], journey: list[Action]) -> None:
    """Interleave a journey into the actions, in order, before the final drain (never between
    a drain extra and the start or tap it follows)."""
    pos = 0
    for action in journey:
        free = [p for p in range(pos, len(actions)) if not (actions[p].op == "drain" and
                                                            actions[p].faults)]  # fmt: skip
        pos = rng.choice(free)
        actions.insert(pos, action)
        pos += 1
        if rng.random() < 0.5:
            actions.insert(pos, Action("drain"))
            pos += 1


def _place_extra(
    rng: random.Random, kind: str, actions: list[Action], downsells: int, bump: bool = False
) -> bool:
    """Put an extra kind into the actions; False when the scenario has no place for it.

    A drain extra gets a drain of its own right after a /start or an offer tap (so it has that
    job to run); `bot_paused` goes on a payment; `pay_during_downsell` moves a lead's payment
    to right after its charge, while its downsells wait; `hostile_go` makes a lead's first
    /start come from a /go click with a hostile query string; `update_id_low` restarts the
    bot's update ids low before a /start that is not the scenario's first; `pay_before_pix`
    gets a drain of its own right after the action that charges (the bump's answer in a funnel
    with an order bump, else the offer tap), in which the customer pays before the PIX code
    could go out."""
    ops = [a.op for a in actions]
    if kind in DRAIN_EXTRAS:
        # One drain extra per start or tap: a second would find the job already run.
        taken = {
            i - 1 for i, a in enumerate(actions) if any(f.kind in DRAIN_EXTRAS for f in a.faults)
        }
        fits = [i for i, op in enumerate(ops) if op in ("start", "tap") and i not in taken]
        at = _pick(rng, fits)
        if at is not None:
            actions.insert(at + 1, Action("drain", faults=[Fault(kind, _extra_params(rng, kind))]))
    elif kind == "pay_before_pix":
        taken = {i - 1 for i, a in enumerate(actions) if a.op == "drain" and a.faults}
        charging = "bump" if bump else "tap"
        at = _pick(rng, [i for i, op in enumerate(ops) if op == charging and i not in taken])
        if at is not None:
            pay = Fault(kind, {"lead": actions[at].lead})
            actions.insert(at + 1, Action("drain", faults=[pay]))
    elif kind == "bot_paused":
        at = _pick(rng, [i for i, op in enumerate(ops) if op == "pay"])
        if at is not None:
            actions[at].faults.append(Fault(kind, {}))
    elif kind == "pay_during_downsell":
        at = _pick(rng, [i for i, op in enumerate(ops) if op == "pay"]) if downsells else None
        if at is not None:
            pay = actions.pop(at)
            charge = max(i for i, a in enumerate(actions[:at]) if a.lead == pay.lead and
                         a.op in ("tap", "bump"))  # fmt: skip
            pay.faults.append(Fault(kind, {}))
            actions[charge + 1 : charge + 1] = [Action("drain"), pay]
    elif kind == "hostile_go":
        firsts = {}
        for i, a in enumerate(actions):
            if a.op == "start":
                firsts.setdefault(a.lead, i)
        at = _pick(rng, sorted(firsts.values()))
        if at is not None:
            actions[at].faults.append(Fault(kind, {"query": rng.randrange(len(HOSTILE_QUERIES))}))
    elif kind == "gateway_malformed":
        # On a payment with no other fault: a refused forgery must not be an injected outage.
        at = _pick(rng, [i for i, a in enumerate(actions) if a.op == "pay" and not a.faults])
        if at is not None:
            picks = rng.sample(range(MALFORMED_BODIES), 3)
            actions[at].faults.append(Fault(kind, {"picks": picks}))
    elif kind == "long_caption":
        return True  # the welcome's text is over the caption limit (a property of the funnel)
    elif kind == "update_id_low":
        at = _pick(rng, [i for i, op in enumerate(ops) if op == "start"][1:])
        if at is not None:
            actions[at].faults.append(Fault(kind, {}))
    else:
        raise ValueError(kind)
    return at is not None


def _pick(rng: random.Random, candidates: list[int]) -> int | None:
    return rng.choice(candidates) if candidates else None


def _extra_params(rng: random.Random, kind: str) -> dict:
    if kind == "db_outage":
        return {"tries": 8}
    if kind == "telegram_429_long":
        return {"retry_after": LONG_RETRY_AFTER}
    if kind == "redis_data_loss":
        # "all": every write of the drain is gone (one Redis, its replica last synced before
        # the drain); "state": the state Redis's (the bots' locks, rate limiter, 429 holds,
        # bot cache) are gone while the queue Redis kept RQ's (phase 3: two Redis services).
        return {"lost": rng.choice(("all", "state"))}
    return {}


def _fits(kind: str, action: Action) -> bool:
    if kind == "worker_kill":
        return action.op == "drain" and not any(
            f.kind == "worker_kill" or f.kind in EXTRA_KINDS for f in action.faults
        )
    if kind == "db_commit_lost":
        # Commits happen in workers and in the payment and admin endpoints, not at intake.
        return action.op in ("drain", "later", "pay", "pay_twin", "campaign")
    return True
