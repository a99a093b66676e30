"""Run one scenario in a lane process: set up, act with faults, recover, observe.

The harness plays Telegram (delivers updates, redelivers the ones answered non-2xx), the
payment gateway (signed confirmations, repeated until 2xx) and a seller (creates and starts a
campaign, retrying 5xx). The app's own code does everything else.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import threading
import time
from collections import Counter
from dataclasses import dataclass, field

import redis as redis_lib
from rq import Queue, SimpleWorker
from sqlalchemy import select

from faults import inputs, outages, sellers
from faults.inject import CommitLoss, HarnessConnection, RedisFaults, RedisPlan
from faults.lane import GATEWAY_SECRET, Lane, Standby
from faults.scenario import EXTRA_KINDS, LONG_RETRY_AFTER, Action, Fault, Scenario
from grimbots import db as db_module
from grimbots import webhook
from grimbots.models import Campaign, Lead, Payment
from grimbots.payments import SandboxGateway
from grimbots.queues import QUEUE_NAMES
from grimbots.redis_pool import queue_connection
from grimbots.telegram import RateLimiter
from grimbots.worker import drain_queues, enqueue_due_scheduled
from tests.factories import make_bot, make_funnel, make_seller

SECRET_HEADER = "X-Telegram-Bot-Api-Secret-Token"
RECOVERY_WAIT = float(os.environ.get("FAULT_RECOVERY_WAIT", "60"))
# Never wait on more than this many redeliveries of one update (Telegram gives up too).
MAX_REDELIVERIES = 12
# Each recovery round lets this much time pass (seconds) for Redis keys and the database.
RECOVERY_STEP = 120
MIN_RECOVERY_ROUNDS = 2
PERSISTENT = 10**6
HOLD_END_MS = 10**9  # past any retry_after


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


class ScenarioRun:
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
        self.tenancy: list[tuple[str, int]] = []  # another seller's probes and their answers

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

    def _later(self, seconds: int, everything: bool = False) -> None:
        """Time passes: the work queued now runs under this step's faults; then, with the faults
        over, the jobs that come due within `seconds` (RQ retries, downsells) run, in as many
        rounds as they need; then short-lived Redis keys and the database's timestamps age by
        `seconds`. With `everything`, every scheduled job runs (recovery: time goes on)."""
        self._drain()
        self._disarm()
        for _ in range(3):  # a worker that died is restarted, like systemd does
            if not self._queued():
                break
            self._drain()
        window_end = time.time() + seconds
        for _ in range(12):
            try:
                moved = move_scheduled(None if everything else window_end)
            except Exception as exc:
                self.notes.append(f"scheduler died: {type(exc).__name__}")
                break
            if not moved:
                break
            self._drain()
        ms = seconds * 1000
        for key in self.r.scan_iter(count=1000):
            if key.startswith("rq:") or ":rl:" in key:
                continue  # RQ's registries and the rate limiter run on real time
            ttl = self.r.pttl(key)
            if ttl > 0:
                if ttl <= ms:
                    self.r.delete(key)
                else:
                    self.r.pexpire(key, ttl - ms)
        # Recovery lets all the time pass that the remaining work needs: holds run out.
        self.hold_ends += outages.age_rate_holds(self.r, HOLD_END_MS if everything else ms)
        self.lane.shift_time(self.s.backend, seconds)
        webhook.forget_local_bot_meta()

    def _worker_process(self, burst: bool) -> subprocess.Popen:
        """A real `grimbots worker` process on every queue, with the lane's settings."""
        env = dict(os.environ) | self.lane.settings_env(
            self.s.backend, self.fake.base_url, self.s.lagging_reads
        )
        env.pop("PROMETHEUS_MULTIPROC_DIR", None)
        args = [sys.executable, "-c", "from grimbots.cli import main; main()", "worker",
                "webhook", "tasks", "gateway"] + (["--burst"] if burst else [])  # fmt: skip
        # Its own process group: RQ's scheduler is a forked child that must die with it.
        return subprocess.Popen(
            args,
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            start_new_session=True,
        )

    @staticmethod
    def _kill_group(proc: subprocess.Popen) -> None:
        """What systemd does once a unit's main process is gone: kill what is left of it."""
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(proc.pid, signal.SIGKILL)
        # Gone for good (an orphan still holding the dead worker's BLPOP socket would take the
        # next job pushed and lose it), then a moment for Redis to see its sockets close.
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline:
            try:
                os.killpg(proc.pid, 0)
            except (ProcessLookupError, PermissionError):
                break
            time.sleep(0.02)
        time.sleep(0.1)

    def _parallel_workers(self, n: int) -> None:
        """Several worker processes drain the queues at once (burst mode), as in production."""
        procs = [self._worker_process(burst=True) for _ in range(n)]
        deadline = time.monotonic() + 90
        for proc in procs:
            try:
                proc.wait(timeout=max(1.0, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(timeout=10)
                self.notes.append("a burst worker was still busy after 90 s")
            self._kill_group(proc)
        self._drain()

    def _kill_worker_mid_job(self, params: dict) -> None:
        """A real worker process takes the queued jobs; it is SIGKILLed while one is running."""
        self.fake.add_fault(status=None, delay=params["slow"], count=2, token=self.fault_token)
        proc = self._worker_process(burst=False)
        try:
            time.sleep(params["kill_after"])
        finally:
            proc.send_signal(signal.SIGKILL)  # the main process only, like kill -9 <pid>
            proc.wait(timeout=10)
            self._kill_group(proc)
        self.fired["worker_kill"] += 1

    # -- the gateway and the seller ------------------------------------------------------------
    def _pay(self, lead: int, twin: bool = False) -> None:
        chat = self.chats[lead]
        with self.hdb.session() as session:
            payments = session.scalars(
                select(Payment)
                .join(Lead, Lead.id == Payment.lead_id)
                .where(Lead.bot_id == self.bot(lead).bot_id, Lead.telegram_user_id == chat)
                .order_by(Payment.id.desc())
            ).all()
            if not payments:
                return  # no charge yet (its job failed): the customer pays once the PIX arrives
            target = next((p for p in payments if p.status == "paid"), payments[0])
            if target.id not in self.payment_posts:
                self.payment_posts[target.id] = {
                    "txid": target.gateway_txid,
                    "amount": target.amount_cents,
                    "lead": lead,
                    "answers": [],
                    "ok": False,
                }
            elif not twin and self.payment_posts[target.id]["ok"]:
                return
        self._post_payment(target.id)

    def _post_payment(self, payment_id: int) -> None:
        post = self.payment_posts[payment_id]
        body, headers = SandboxGateway(GATEWAY_SECRET).event_body(
            post["txid"], "paid", post["amount"]
        )
        try:
            status = self.client.post(
                "/webhook/payment/sandbox", data=body, headers=headers
            ).status_code
        except Exception as exc:
            self.notes.append(f"payment webhook raised {type(exc).__name__}: {exc}")
            status = 500
        post["answers"].append(status)
        post["ok"] = post["ok"] or 200 <= status < 300
        chat = self.chats[post["lead"]]
        if chat not in self.paid_at and self._is_paid(payment_id):
            self.paid_at[chat] = time.time()

    def _is_paid(self, payment_id: int) -> bool:
        with self.hdb.session() as session:
            payment = session.get(Payment, payment_id)
            return payment is not None and payment.status == "paid"

    def _campaign(self) -> None:
        campaign = {
            "text": f"Promocao {self.s.index}-{len(self.campaigns)}: so hoje!",
            "key": f"faults-{self.s.seed}-{self.s.index}-{len(self.campaigns)}",
            "id": None,
            "started": False,
            "done": False,
            "answers": [],
        }
        self.campaigns.append(campaign)
        self._campaign_step(campaign)

    def _campaign_step(self, campaign: dict) -> None:
        """The seller's next call: create (until 2xx), then start (until 2xx or 409)."""
        auth = {"Authorization": f"Bearer {self.api_token}"}
        try:
            if campaign["id"] is None:
                resp = self.client.post(
                    "/api/campaigns",
                    json={"bot_id": self.bot_id, "name": "promo", "text": campaign["text"]},
                    headers=auth | {"Idempotency-Key": campaign["key"]},
                )
                campaign["answers"].append(resp.status_code)
                if resp.status_code == 201:
                    campaign["id"] = resp.get_json()["id"]
                else:
                    return
            resp = self.client.post(f"/api/campaigns/{campaign['id']}/start", headers=auth)
            campaign["answers"].append(resp.status_code)
            if resp.status_code in (202, 409):
                campaign["done"] = True
        except Exception as exc:
            self.notes.append(f"campaign API raised {type(exc).__name__}: {exc}")
            campaign["answers"].append(500)

    # -- recovery ---------------------------------------------------------------------------------
    def recover(self) -> float:
        """Faults cleared; redeliveries, retries, maintenance and reconcilers until quiet."""
        started = time.monotonic()
        deadline = started + RECOVERY_WAIT
        try:
            self._recover(deadline)
            self.settle()
        finally:
            self.op_seconds["recovery"] += time.monotonic() - started
        return time.monotonic() - started

    def settle(self, limit: float = 10.0) -> None:
        """Wait until the fake has recorded every call a delay fault was holding back."""
        deadline = time.monotonic() + limit
        while self.fake.held() and time.monotonic() < deadline:
            time.sleep(0.05)

    def _recover(self, deadline: float) -> None:
        self._disarm()
        self.fake.clear_faults()
        self.reactivate = [b for b in self.reactivate if not outages.set_active(self, True, b)]
        for lead in list(self.blocked):
            self.blocked.discard(lead)
            self._block_chat(lead)
        rounds = 0
        while True:
            rounds += 1
            if self.standby is not None:
                self.standby.catch_up()
            self._redeliver_refused(max_per_item=1)
            for lead in sorted(self.pay_wanted):
                self._pay(lead)
            self._later(RECOVERY_STEP, everything=True)
            self._maintenance()
            self._drain(include_scheduled=False)
            # A few passes at least: a reconciler acts on rows older than its grace time.
            if rounds >= MIN_RECOVERY_ROUNDS and self._quiet():
                break
            if time.monotonic() > deadline or rounds > 60:
                self.notes.append(f"recovery did not get quiet in {RECOVERY_WAIT:.0f} s")
                break
            if self._stuck_jobs():
                time.sleep(2.0)  # a dead worker's job: real time must pass for it to be freed

    def _maintenance(self) -> None:
        """What live workers do on their own: RQ's registry maintenance, the app's reconcilers."""
        conn = queue_connection()
        try:
            worker = SimpleWorker([Queue(n, connection=conn) for n in QUEUE_NAMES], connection=conn)
            worker.clean_registries()
        except Exception as exc:
            self.notes.append(f"maintenance failed: {type(exc).__name__}: {exc}")
        for hook in app_maintenance_hooks():
            try:
                hook()
            except Exception as exc:
                self.notes.append(f"{getattr(hook, '__name__', hook)} failed: {exc}")

    def _queued(self) -> int:
        conn = self.rq
        try:
            return sum(Queue(n, connection=conn).count for n in QUEUE_NAMES)
        except Exception:
            return 1

    def _stuck_jobs(self) -> int:
        conn = self.rq
        return sum(Queue(n, connection=conn).started_job_registry.count for n in QUEUE_NAMES)

    def _quiet(self) -> bool:
        if self._refused_updates():
            return False
        if any(not p["ok"] and len(p["answers"]) <= MAX_REDELIVERIES
               for p in self.payment_posts.values()):  # fmt: skip
            return False
        if any(not c["done"] and len(c["answers"]) <= MAX_REDELIVERIES for c in self.campaigns):
            return False
        conn = self.rq
        for name in QUEUE_NAMES:
            q = Queue(name, connection=conn)
            if q.count or q.scheduled_job_registry.count or q.started_job_registry.count:
                return False
        for lead in self.pay_wanted:
            if self.chats[lead] not in self.paid_at and self._has_payment(lead):
                return False
        return True

    def _has_payment(self, lead: int) -> bool:
        with self.hdb.session() as session:
            return (
                session.scalar(
                    select(Payment.id)
                    .join(Lead, Lead.id == Payment.lead_id)
                    .where(
                        Lead.bot_id == self.bot(lead).bot_id,
                        Lead.telegram_user_id == self.chats[lead],
                    )
                )
                is not None
            )

    # -- what happened -----------------------------------------------------------------------------
    def job_notes(self) -> list[str]:
        """Jobs RQ still holds (failed, started, scheduled), for a failing scenario's report."""
        out = []
        conn = self.rq
        for name in QUEUE_NAMES:
            q = Queue(name, connection=conn)
            for label, registry in (
                ("failed", q.failed_job_registry),
                ("started", q.started_job_registry),
                ("scheduled", q.scheduled_job_registry),
            ):
                for job_id in registry.get_job_ids()[:10]:
                    job = q.fetch_job(job_id)
                    exc = ""
                    if job is not None and label == "failed":
                        info = job.latest_result()
                        exc = (info.exc_string or "").strip().splitlines()[-1:] if info else []
                        exc = exc[0][:100] if exc else ""
                    out.append(f"job {name}/{label}: {job_id} {exc}")
        return out

    def count_telegram_faults(self, calls: list[dict]) -> None:
        """Telegram faults that fired, by kind, from the fake's own record."""
        for c in calls:
            if c["status"] == 429 and c.get("fault"):
                long = f"retry after {LONG_RETRY_AFTER}" in str(c.get("description"))
                self.fired["telegram_429_long" if long else "telegram_429"] += 1
            elif c["status"] >= 500 and c.get("fault"):
                kind = "telegram_timeout_before" if c.get("delay") else "telegram_5xx"
                self.fired[kind] += 1
            elif c["status"] == 200 and c.get("delay"):
                self.fired["telegram_timeout_after"] += 1

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
            go_answers=self.go_answers,
            go_tokens=self.go_tokens,
            malformed=self.malformed,
        )


def move_scheduled(until: float | None) -> int:
    """What RQ's scheduler does when jobs come due: move those due by `until` (epoch seconds;
    None: all of them) to their queues."""
    return enqueue_due_scheduled(include_future=until is None, until=until)


def app_maintenance_hooks() -> list:
    """The app's own periodic recovery, if it has one (see docs/app.md, Proof)."""
    import importlib

    hooks: list = []
    worker = importlib.import_module("grimbots.worker")
    if callable(getattr(worker, "run_maintenance", None)):
        hooks.append(worker.run_maintenance)
        return hooks
    for module in ("grimbots.reconcile", "grimbots.jobs"):
        try:
            mod = importlib.import_module(module)
        except ImportError:
            continue
        hooks += [h for h in getattr(mod, "RECONCILERS", ()) if callable(h)]
    return hooks
