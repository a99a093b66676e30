"""Run one scenario in a lane process: set up, act with faults, recover, observe.

The harness plays Telegram (delivers updates, redelivers the ones answered non-2xx), the
payment gateway (signed confirmations, repeated until 2xx) and a seller (creates and starts a
campaign, retrying 5xx). The app's own code does everything else.
"""

from __future__ import annotations

import contextlib
import json
import threading
import time
from collections import Counter

import redis as redis_lib
from sqlalchemy import select

from faults import inputs, outages, sellers
from faults.clock import ScenarioTime
from faults.gateway import SellerSide
from faults.inject import CommitLoss, HarnessConnection, RedisFaults, RedisPlan
from faults.lane import Lane, Standby
from faults.records import BotCtx, Observation, Sent
from faults.recovery import MAX_REDELIVERIES, Recovery
from faults.scenario import EXTRA_KINDS, Action, Fault, Scenario
from faults.workers import WorkerProcesses
from grimbots import db as db_module
from grimbots import webhook
from grimbots.models import Campaign, Lead
from grimbots.telegram import RateLimiter
from grimbots.worker import drain_queues
from tests.factories import make_bot, make_funnel, make_seller

SECRET_HEADER = "X-Telegram-Bot-Api-Secret-Token"
PERSISTENT = 10**6


class ScenarioRun(ScenarioTime, Recovery, WorkerProcesses, SellerSide):
    def __init__(
        self,
        lane: Lane,
        fake,
        app,
        redis_faults: RedisFaults,
        commit_loss: CommitLoss,
        scenario: Scenario,
    ) -> None:
        self.lane = lane
        self.fake = fake
        self.app = app
        self.client = app.test_client()
        self.redis_faults = redis_faults
        self.commit_loss = commit_loss
        self.s = scenario
        self.fired: Counter[str] = Counter()
        self.notes: list[str] = []
        self.updates: list[Sent] = []
        self.payment_posts: dict[int, dict] = {}  # payment id -> {"txid", "amount", "answers"}
        self.pay_wanted: set[int] = set()  # lead indexes whose customer wants to pay
        self.paid_at: dict[int, float] = {}
        self.payment_paid_at: dict[int, float] = {}  # payment id -> wall time seen paid
        self.blocked: set[int] = set()
        self.campaigns: list[dict] = []
        self.tapped: dict[int, int] = {}
        self._next_update = 0
        self.standby: Standby | None = None
        self.worker_crashes = 0
        self.op_seconds: Counter[str] = Counter()
        self.paused: list[tuple[float, float, int]] = []  # wall times a bot was inactive
        self.reactivate: list[BotCtx] = []  # reactivations the sellers still owe (5xx)
        # (when, the wall time a 429 hold ends) each time the harness let time pass for it
        self.hold_ends: list[tuple[float, float, str]] = []  # and the hold's key
        self.go_slug: dict[int, str] = {}  # bot id -> its pool's /go slug
        self.go_answers: list[int] = []  # statuses of the /go clicks
        self.go_tokens: list[str] = []  # the /start tokens they handed out
        self.low_restarts = 0
        self.malformed: list[tuple[int, int, bool]] = []  # (body, answer, paid by it)
        self.bots: list[BotCtx] = []  # bot 0 first: campaigns and the other faults are its
        self.tenancy: list[tuple[str, int]] = []
        self.rate_resets: list[
            tuple[float, str]
        ] = []  # limiter windows a Redis loss erased  # another seller's probes and their answers

    # -- setup ---------------------------------------------------------------------------------
    def setup(self) -> None:
        started = time.monotonic()
        try:
            self._setup()
        finally:
            self.op_seconds["setup"] += time.monotonic() - started

    def _setup(self) -> None:
        s = self.s
        self.settings = self.lane.settings(s.backend, self.fake.base_url, s.lagging_reads)
        self.app.config["GRIMBOTS_SETTINGS"] = self.settings
        db_module.reset_db()
        db = db_module.get_db(self.settings)
        # The harness reads the primary through its own engine: faults never touch it.
        self.hdb = db_module.Database(self.settings.database_url, pool_size=2, max_overflow=2)
        if s.backend == "postgres":
            self.commit_loss.install(db.engine)
        webhook.forget_local_bot_meta()
        # The harness's own client: faults are never injected into it.
        self.r = redis_lib.Redis.from_url(
            self.lane.redis_url, decode_responses=True, connection_class=HarnessConnection
        )
        self.r.flushdb()
        # RQ's registries as the harness reads them (raw replies, never faulted).
        self.rq = redis_lib.Redis.from_url(self.lane.redis_url, connection_class=HarnessConnection)
        self.fake.clear()
        long_text = ""
        if "long_caption" in s.kinds:
            long_text = " Conteudo exclusivo, acesso vitalicio." * 40  # over 1,024 characters
            self.fired["long_caption"] += int(s.media)
        with db.session() as session:
            for k in range(s.bots):
                shop = f" loja {k}" if k else ""  # bot 0 keeps the one-seller texts
                seller, api_token = make_seller(session)
                funnel = make_funnel(
                    session,
                    seller,
                    text=f"Bem-vindo {s.index}{shop}! Escolha sua oferta:" + long_text,
                    media="photo" if s.media else None,
                    downsells=s.downsells,
                    bump=s.bump,
                )
                for ds in funnel.downsells:
                    ds.text = f"Desconto {ds.position + 1} (cenario {s.index}{shop})"
                bot = make_bot(session, seller, funnel)
                offers = [o.id for o in funnel.offers][:2]
                self.bots.append(
                    BotCtx(bot.id, bot.token, bot.webhook_secret, api_token, offers,
                           funnel.welcome_text)
                )  # fmt: skip
            first = self.bots[0]
            self.bot_id, self.token, self.secret = first.bot_id, first.token, first.secret
            self.api_token, self.offers, self.welcome_text = (
                first.api_token, first.offers, first.welcome_text
            )  # fmt: skip
            for i in range(s.crowd):
                chat = 5 * 10**9 + s.index * 1000 + i
                session.add(Lead(bot_id=first.bot_id, telegram_user_id=chat, chat_id=chat))
        self.chats = dict(enumerate(s.leads))
        if s.bots > 1:
            sellers.probe_tenancy(self)
        self._next_update = 10_000 + s.index * 1000
        if s.lagging_reads:
            self.standby = Standby(self.lane, s.backend)
            self.standby.catch_up()
            self.fired["standby_lag"] += 1
        self._rng_lag = __import__("random").Random(f"lag:{s.seed}:{s.index}")

    def teardown(self) -> None:
        self.redis_faults.disarm()
        self.commit_loss.disarm()
        self.commit_loss.uninstall()
        with contextlib.suppress(Exception):
            self.r.close()
        with contextlib.suppress(Exception):
            self.rq.close()
        with contextlib.suppress(Exception):
            self.hdb.dispose()

    # -- the scenario ------------------------------------------------------------------------
    def run(self) -> None:
        for action in self.s.actions:
            self._arm(action.faults)
            started = time.monotonic()
            try:
                self._act(action)
            finally:
                self._disarm()
                self.op_seconds[action.op] += time.monotonic() - started
            # Telegram and the gateway come back soon with what was refused.
            self._redeliver_refused(max_per_item=1)
            if self.standby is not None and self._rng_lag.random() < 0.25:
                self.standby.catch_up()

    def _arm(self, faults: list[Fault]) -> None:
        plans, commits = [], []
        for f in faults:
            p = f.params
            if f.kind in ("redis_error", "redis_timeout"):
                mode = "error" if f.kind == "redis_error" else "reply_lost"
                plans.append(RedisPlan(mode, p["after"], p["count"]))
            elif f.kind == "db_commit_lost":
                commits.append(p["at"])
            elif f.kind == "telegram_403":
                self._block_chat(p["lead"])
                self.fired[f.kind] += 1
            elif f.kind.startswith("telegram_") and f.kind not in EXTRA_KINDS:
                self.fake.add_fault(
                    status=p["status"],
                    method=p.get("method"),
                    count=p["count"],
                    retry_after=p.get("retry_after", 1),
                    token=self.fault_token,
                    delay=p.get("delay", 0.0),
                )
        self._telegram_faults = [
            f for f in faults if f.kind.startswith("telegram_") and f.kind not in EXTRA_KINDS
        ]
        self._telegram_pending = len(self.fake.faults())
        self.redis_faults.arm(plans)
        if commits and self.s.backend == "postgres":
            self.commit_loss.arm(commits)

    def _disarm(self) -> None:
        fired = dict(self.redis_faults.fired)
        self.redis_faults.disarm()
        self.redis_faults.fired.clear()
        if fired.get("error"):
            self.fired["redis_error"] += 1
        if fired.get("reply_lost"):
            self.fired["redis_timeout"] += 1
        if self.commit_loss.fired:
            self.fired["db_commit_lost"] += self.commit_loss.fired
            self.commit_loss.fired = 0
        self.commit_loss.disarm()

    def hold_ends_of(self, bot_id: int) -> list[tuple[float, float]]:
        key = RateLimiter.hold_key(bot_id)
        return [(at, end) for at, end, hold in self.hold_ends if hold == key]

    def bot(self, lead: int) -> BotCtx:
        """The bot this lead talks to."""
        return self.bots[self.s.bot_of(lead)]

    @property
    def fault_token(self) -> str | None:
        """Telegram faults hit the one bot, or, with several sellers, whichever bot calls."""
        return self.token if len(self.bots) == 1 else None

    def _block_chat(self, lead: int) -> None:
        """The user blocked the bot: Telegram answers 403 for that chat from now on."""
        if lead in self.blocked:
            return
        self.blocked.add(lead)
        self.fake.add_fault(
            status=403, count=PERSISTENT, chat_id=self.chats[lead], token=self.bot(lead).token
        )

    def _act(self, a: Action) -> None:
        op = a.op
        if op == "start":
            kinds = {f.kind: f for f in a.faults}
            token = None
            if "hostile_go" in kinds:
                query = int(kinds["hostile_go"].params["query"])
                token = inputs.go_click(self, query, a.lead)
            if "update_id_low" in kinds:
                inputs.restart_update_ids(self)
            body = self._start_body(a.lead, token)
            self._deliver(self._new_update(a.lead, "start", body))
        elif op == "twin":
            mine = [u for u in self.updates if u.lead == a.lead]
            if mine:
                self._deliver_copies(mine[-1], int(a.arg or 1))
        elif op == "tap":
            offers = self.bot(a.lead).offers
            offer = offers[int(a.arg) % len(offers)]
            self.tapped[a.lead] = offer
            self._deliver(self._new_update(a.lead, "tap", self._callback(a.lead, f"buy:{offer}")))
        elif op == "bump":
            offer = self.tapped.get(a.lead, self.bot(a.lead).offers[0])
            data = f"bump:{offer}:{1 if a.arg else 0}"
            self._deliver(self._new_update(a.lead, "bump", self._callback(a.lead, data)))
        elif op == "block":
            self._block_chat(a.lead)
            body = self._member_update(a.lead)
            self._deliver(self._new_update(a.lead, "block", body))
        elif op == "drain":
            kill = next((f for f in a.faults if f.kind == "worker_kill"), None)
            extra = next((f for f in a.faults if f.kind in EXTRA_KINDS), None)
            if kill is not None:
                self._kill_worker_mid_job(kill.params)
            elif extra is not None and extra.kind == "db_outage":
                outages.drain_through_db_outage(self, int(extra.params["tries"]))
            elif extra is not None and extra.kind == "redis_data_loss":
                outages.drain_losing_redis_writes(self, str(extra.params["lost"]))
            elif extra is not None and extra.kind == "pay_before_pix":
                outages.drain_paying_before_pix(self, int(extra.params["lead"]))
            elif extra is not None and extra.kind == "telegram_429_long":
                outages.drain_after_long_429(self, int(extra.params["retry_after"]))
            elif extra is not None:
                outages.drain_with_a_stale_run(self)
            elif a.arg and int(a.arg) > 1:
                self._parallel_workers(int(a.arg))
            else:
                self._drain()
        elif op == "later":
            self._later(int(a.arg))
        elif op in ("pay", "pay_twin"):
            self.pay_wanted.add(a.lead)
            if any(f.kind == "pay_during_downsell" for f in a.faults) and inputs.downsells_waiting(
                self.rq
            ):
                self.fired["pay_during_downsell"] += 1
            malformed = next((f for f in a.faults if f.kind == "gateway_malformed"), None)
            if malformed is not None:
                inputs.post_malformed(self, a.lead, list(malformed.params["picks"]))
            if any(f.kind == "bot_paused" for f in a.faults):
                outages.pay_while_paused(self, a.lead, twin=op == "pay_twin")
            else:
                self._pay(a.lead, twin=op == "pay_twin")
        elif op == "campaign":
            for _ in range(int(a.arg or 1)):
                self._campaign()
        else:
            raise ValueError(op)

    # -- Telegram's side -------------------------------------------------------------------------
    def _new_update(self, lead: int, kind: str, body: dict) -> Sent:
        self._next_update += 1
        body = {"update_id": self._next_update, **body}
        sent = Sent(self._next_update, lead, kind, body)
        self.updates.append(sent)
        return sent

    def _user(self, lead: int) -> dict:
        return {"id": self.chats[lead], "is_bot": False, "first_name": "Lead", "username": "lead"}

    def _start_body(self, lead: int, token: str | None = None) -> dict:
        chat = self.chats[lead]
        return {
            "message": {
                "message_id": self._next_update % 100000 + 1,
                "date": int(time.time()),
                "chat": {"id": chat, "type": "private", "first_name": "Lead"},
                "from": self._user(lead),
                "text": f"/start {token}" if token else "/start",
            }
        }

    def _callback(self, lead: int, data: str) -> dict:
        chat = self.chats[lead]
        return {
            "callback_query": {
                "id": f"cq{self._next_update + 1}",
                "from": self._user(lead),
                "message": {
                    "message_id": 1,
                    "date": int(time.time()),
                    "chat": {"id": chat, "type": "private"},
                },
                "chat_instance": "1",
                "data": data,
            }
        }

    def _member_update(self, lead: int) -> dict:
        chat = self.chats[lead]
        return {
            "my_chat_member": {
                "chat": {"id": chat, "type": "private"},
                "from": self._user(lead),
                "date": int(time.time()),
                "old_chat_member": {"status": "member", "user": {"id": 1, "is_bot": True}},
                "new_chat_member": {"status": "kicked", "user": {"id": 1, "is_bot": True}},
            }
        }

    def _deliver_copies(self, sent: Sent, copies: int) -> None:
        """The same update delivered by several of Telegram's connections at once."""
        if copies <= 1:
            self._deliver(sent)
            return
        threads = [
            threading.Thread(target=self._deliver, args=(sent, self.app.test_client()))
            for _ in range(copies)
        ]
        for t in threads:
            t.start()
        for t in threads:
            t.join(timeout=60)

    def _deliver(self, sent: Sent, client=None) -> int:
        bot = self.bot(sent.lead)
        try:
            resp = (client or self.client).post(
                f"/webhook/telegram/{bot.bot_id}",
                data=json.dumps(sent.body),
                headers={SECRET_HEADER: bot.secret, "Content-Type": "application/json"},
            )
            status = resp.status_code
            body = resp.get_json(silent=True) or {}
            sent.duplicate.append(str(body.get("duplicate") or ""))
        except Exception as exc:  # the app let an exception escape: a 500 to Telegram
            self.notes.append(f"webhook raised {type(exc).__name__}: {exc}")
            status = 500
            sent.duplicate.append("")
        sent.answers.append(status)
        return status

    def _refused_updates(self) -> list[Sent]:
        return [u for u in self.updates if not u.accepted and len(u.answers) <= MAX_REDELIVERIES]

    def _redeliver_refused(self, max_per_item: int) -> int:
        n = 0
        for _ in range(max_per_item):
            for sent in self._refused_updates():
                self._deliver(sent)
                n += 1
            for payment_id, post in self.payment_posts.items():
                if not post["ok"] and len(post["answers"]) <= MAX_REDELIVERIES:
                    self._post_payment(payment_id)
                    n += 1
            for campaign in self.campaigns:
                if not campaign["done"] and len(campaign["answers"]) <= MAX_REDELIVERIES:
                    self._campaign_step(campaign)
                    n += 1
        return n

    # -- workers --------------------------------------------------------------------------------
    def _drain(self, include_scheduled: bool = False) -> None:
        try:
            drain_queues(include_scheduled=include_scheduled, rounds=30)
        except Exception as exc:  # the worker process died (systemd would restart it)
            self.worker_crashes += 1
            self.notes.append(f"worker died: {type(exc).__name__}: {str(exc)[:120]}")

    def observe(self) -> list[Observation]:
        """One observation per bot (bot 0 first: it holds the campaigns and scenario inputs)."""
        return sellers.per_bot(self, self._observe())

    def _observe(self) -> Observation:
        audience: dict[int, set[int]] = {}
        texts: dict[int, str] = {}
        with self.hdb.session() as session:
            for c in self.campaigns:
                if c["id"] is None:
                    continue
                campaign = session.get(Campaign, c["id"])
                texts[c["id"]] = c["text"]
                leads = session.scalars(select(Lead).where(Lead.bot_id == self.bot_id)).all()
                audience[c["id"]] = {
                    lead.chat_id
                    for lead in leads
                    if campaign.started_at is not None and lead.created_at <= campaign.started_at
                }
        return Observation(
            token=self.token,
            bot_id=self.bot_id,
            chats=self.chats,
            updates=self.updates,
            welcome_content=(self.welcome_text, "sendPhoto" if self.s.media else "sendMessage"),
            paid_at=self.paid_at,
            payment_paid_at=self.payment_paid_at,
            blocked={self.chats[i] for i in self.blocked},
            campaign_texts=texts,
            campaign_audience=audience,
            refused_payments=[p["txid"] for p in self.payment_posts.values() if not p["ok"]],
            campaign_refused=[c["text"] for c in self.campaigns if not c["done"]],
            notes=self.notes,
            redis_url=self.lane.redis_url,
            backend=self.s.backend,
            paused=[(start, end) for start, end, _ in self.paused],
            hold_ends=self.hold_ends_of(self.bot_id),
            rate_resets=self.rate_resets,
            go_answers=self.go_answers,
            go_tokens=self.go_tokens,
            malformed=self.malformed,
        )
