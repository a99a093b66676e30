"""Fault injectors that sit under the app's own code in the lane process.

Redis: redis-py's connection send and read are wrapped. A planned fault fires at a chosen call
count while the injector is armed (only while the app's code runs a scenario step, never during
the harness's own checks): "error" fails the send before anything reaches Redis (connection
refused), "reply_lost" lets the command execute and then loses the reply (a read timeout).
Several consecutive calls can fail, so redis-py's own retries either absorb a blip or an
outage reaches the app.

Database: the dialect's commit is wrapped; at the chosen commit the real COMMIT succeeds and the
caller gets the error a dropped connection gives (the outcome of the commit is lost). An outage
makes every session the app opens fail, as PostgreSQL down does.
"""

from __future__ import annotations

import threading
from collections import Counter
from dataclasses import dataclass

import psycopg
import redis
from redis.connection import AbstractConnection
from sqlalchemy import Engine
from sqlalchemy.exc import OperationalError


class HarnessConnection(redis.Connection):
    """The harness's own Redis connections (checks, time travel): faults pass them by."""

    harness = True


@dataclass
class RedisPlan:
    mode: str  # "error" or "reply_lost"
    after: int  # fire at this armed call (0-based)
    count: int  # consecutive calls that fail


class RedisFaults:
    """Count-triggered Redis faults; install() once per process."""

    def __init__(self) -> None:
        self.armed = False
        self.plans: list[RedisPlan] = []
        self.calls = {"error": 0, "reply_lost": 0}
        self.fired = Counter()
        self._failing: dict[str, int] = {}
        self._lock = threading.Lock()
        self._orig_send = AbstractConnection.send_packed_command
        self._orig_read = AbstractConnection.read_response

    def install(self) -> None:
        faults = self

        def send_packed_command(conn, command, check_health=True):
            if not getattr(conn, "harness", False) and faults._should_fail("error"):
                conn.disconnect()
                raise redis.ConnectionError("injected fault: connection refused")
            return faults._orig_send(conn, command, check_health)

        def read_response(conn, *args, **kwargs):
            response = faults._orig_read(conn, *args, **kwargs)
            if not getattr(conn, "harness", False) and faults._should_fail("reply_lost"):
                conn.disconnect()
                raise redis.TimeoutError("injected fault: timeout reading from socket")
            return response

        AbstractConnection.send_packed_command = send_packed_command
        AbstractConnection.read_response = read_response

    def uninstall(self) -> None:
        AbstractConnection.send_packed_command = self._orig_send
        AbstractConnection.read_response = self._orig_read

    def arm(self, plans: list[RedisPlan]) -> None:
        with self._lock:
            self.plans = list(plans)
            self.calls = {"error": 0, "reply_lost": 0}
            self._failing = {}
            self.armed = bool(plans)

    def disarm(self) -> None:
        with self._lock:
            self.armed = False
            self.plans = []
            self._failing = {}

    def _should_fail(self, mode: str) -> bool:
        if not self.armed:
            return False
        with self._lock:
            if not self.armed:
                return False
            left = self._failing.get(mode, 0)
            if left:
                self._failing[mode] = left - 1
                self.fired[mode] += 1
                return True
            n = self.calls[mode]
            self.calls[mode] = n + 1
            for plan in self.plans:
                if plan.mode == mode and plan.after == n:
                    self._failing[mode] = plan.count - 1
                    self.fired[mode] += 1
                    self.plans.remove(plan)
                    return True
            return False


class CommitLoss:
    """The COMMIT succeeds on the server; the caller is told the connection dropped."""

    def __init__(self) -> None:
        self.armed_at: list[int] = []
        self.commits = 0
        self.fired = 0
        self._engines: list[tuple[Engine, object]] = []

    def install(self, engine: Engine) -> None:
        dialect = engine.dialect
        original = dialect.do_commit
        loss = self

        def do_commit(dbapi_connection):
            original(dbapi_connection)
            if loss.armed_at:
                n = loss.commits
                loss.commits += 1
                if n in loss.armed_at:
                    loss.armed_at.remove(n)
                    loss.fired += 1
                    raise psycopg.OperationalError(
                        "consuming input failed: server closed the connection unexpectedly"
                    )

        dialect.do_commit = do_commit
        self._engines.append((engine, original))

    def arm(self, at: list[int]) -> None:
        self.armed_at = sorted(at)
        self.commits = 0

    def disarm(self) -> None:
        self.armed_at = []

    def uninstall(self) -> None:
        for engine, original in self._engines:
            engine.dialect.do_commit = original
        self._engines = []


class DatabaseOutage:
    """The app's database unreachable: every session the app opens fails as a refused
    connection does, while `down`; the harness's own Database objects (`spared`) read on."""

    def __init__(self) -> None:
        self.down = False
        self.spared: set[int] = set()
        self.failed = 0
        self._originals: tuple | None = None

    def install(self) -> None:
        from grimbots.db import Database

        if self._originals is not None:
            return
        self._originals = (Database.session, Database.read_session)
        outage = self

        def failing(original):
            def method(db):
                if outage.down and id(db) not in outage.spared:
                    outage.failed += 1
                    raise OperationalError(
                        "connect", {}, psycopg.OperationalError("injected fault: refused")
                    )
                return original(db)

            return method

        Database.session = failing(self._originals[0])
        Database.read_session = failing(self._originals[1])
