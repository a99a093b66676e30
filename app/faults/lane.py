"""One lane: the private Redis database, PostgreSQL schemas and SQLite files a lane process
uses, so lanes run scenarios in parallel without seeing each other's queues or rows.

Two runs may share one PostgreSQL server (two CI jobs, a developer and CI): a lane's schemas are
named after its run (`faults_r<pid>_<key>_lane<N>`), and the run holds a PostgreSQL advisory lock
on its key while it lasts (`RunSchemas`). At the start of a run, the schemas of runs whose lock
is gone (crashed, killed) are dropped; at its end, its own. Redis is a server the run starts
(`RedisServer`), checked to be its own.
"""

from __future__ import annotations

import os
import re
import secrets
import shutil
import socket
import sqlite3
import subprocess
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import quote

import redis as redis_lib
from sqlalchemy import create_engine, text
from sqlalchemy.pool import NullPool

from grimbots import db as db_module
from grimbots.models import Base, UTCDateTime
from grimbots.settings import Settings

ROOT = Path(__file__).resolve().parents[2]
PG_URL = os.environ.get(
    "GRIMBOTS_TEST_PG_URL", "postgresql://grimbots:grimbots@127.0.0.1:5432/grimbots_test"
)
GATEWAY_SECRET = "fault-suite-gateway-secret"
# The client gives up on Telegram after this; "timeout" faults delay the fake longer.
TELEGRAM_TIMEOUT = 1.0
# PostgreSQL advisory locks of fault runs: (RUN_LOCK_CLASS, the run's key), two-int form.
RUN_LOCK_CLASS = 0x6661
RUN_SCHEMA = re.compile(r"^faults_r\d+_([0-9a-f]{8})_lane\d+(_standby)?$")
# DROP SCHEMA waits for locks: a leftover session of a crashed run must not hang a new run.
DROP_LOCK_TIMEOUT = "3s"


def new_run_id() -> str:
    """A run's id: its pid (for people) and a random 31-bit key (its advisory lock)."""
    return f"r{os.getpid()}_{secrets.randbits(31):08x}"


def run_key(run_id: str) -> int:
    return int(run_id.rsplit("_", 1)[1], 16)


def free_port(start: int, end: int) -> int:
    for port in range(start, end + 1):
        with socket.socket() as sock:
            try:
                sock.bind(("127.0.0.1", port))
            except OSError:
                continue
            return port
    raise RuntimeError(f"no free port in {start}-{end}")


class RedisServer:
    """A redis-server this suite owns (never the shared one): lanes use its databases."""

    def __init__(self, port_range: tuple[int, int] = (17200, 17299)) -> None:
        first = int(os.environ.get("FAULT_REDIS_PORT", port_range[0]))
        last = max(first, port_range[1])
        self.dir = tempfile.mkdtemp(prefix="grimbots-faults-redis-")
        taken = ""
        for _ in range(5):  # another run may take the port between the probe and the bind
            self.port = free_port(first, last)
            if self._start():
                return
            if self._foreign or self.server_pid() is not None:
                taken = f"; another fault run uses Redis port {self.port}"
            first = self.port + 1
        shutil.rmtree(self.dir, ignore_errors=True)
        raise RuntimeError(f"redis-server did not start{taken}")

    def _start(self) -> bool:
        """Start redis-server on self.port; False if it could not bind (the port was taken)."""
        self._foreign = False
        self.proc = subprocess.Popen(
            [
                shutil.which("redis-server") or "redis-server",
                "--port", str(self.port),
                "--bind", "127.0.0.1",
                "--save", "",
                "--appendonly", "no",
                "--databases", "64",
                "--dir", self.dir,
                "--logfile", os.path.join(self.dir, "redis.log"),
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )  # fmt: skip
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline and self.proc.poll() is None:
            with socket.socket() as sock:
                if sock.connect_ex(("127.0.0.1", self.port)) == 0:
                    if self.server_pid() == self.proc.pid:
                        return True
                    self._foreign = True  # another run's server answers on this port
                    break
            time.sleep(0.05)
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait(timeout=10)
        return False

    def server_pid(self) -> int | None:
        """The pid of the redis-server answering on self.port (ours, or another run's)."""
        conn = redis_lib.Redis(host="127.0.0.1", port=self.port, socket_timeout=5)
        try:
            for _ in range(100):  # it may still be loading
                try:
                    return int(conn.info("server")["process_id"])
                except redis_lib.BusyLoadingError:
                    time.sleep(0.05)
            return None
        except redis_lib.ConnectionError:
            return None  # nothing answers on the port
        finally:
            conn.close()

    def url(self, db: int) -> str:
        return f"redis://127.0.0.1:{self.port}/{db}"

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(timeout=10)
        shutil.rmtree(self.dir, ignore_errors=True)


def _pg_schema_url(schema: str) -> str:
    sep = "&" if "?" in PG_URL else "?"
    return f"{PG_URL}{sep}options={quote(f'-csearch_path={schema}')}"


@dataclass
class Lane:
    """The resources of one lane process."""

    index: int
    redis_url: str
    run_id: str  # new_run_id(): two runs on one database server never share a schema
    tmp: Path = field(default_factory=lambda: Path(tempfile.mkdtemp(prefix="grimbots-faults-")))
    _engines: dict = field(default_factory=dict)

    @property
    def pg_schema(self) -> str:
        return f"faults_{self.run_id}_lane{self.index}"

    @property
    def pg_schemas(self) -> tuple[str, str]:
        """(primary, standby) schema names."""
        return self.pg_schema, f"{self.pg_schema}_standby"

    def database_urls(self, backend: str) -> tuple[str, str]:
        """(primary, lagging standby) URLs of this lane for a backend."""
        if backend == "sqlite":
            return f"sqlite:///{self.tmp / 'primary.db'}", f"sqlite:///{self.tmp / 'standby.db'}"
        primary, standby = self.pg_schemas
        return _pg_schema_url(primary), _pg_schema_url(standby)

    def prepare(self) -> None:
        """Create the lane's schemas (PostgreSQL) and files (SQLite), empty."""
        admin = create_engine(db_module.normalize_database_url(PG_URL), poolclass=NullPool)
        with admin.begin() as conn:
            conn.execute(text(f"SET LOCAL lock_timeout = '{DROP_LOCK_TIMEOUT}'"))
            for schema in self.pg_schemas:
                conn.execute(text(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE'))
                conn.execute(text(f'CREATE SCHEMA "{schema}"'))
        admin.dispose()
        for backend in ("postgres", "sqlite"):
            for url in self.database_urls(backend):
                engine = db_module.make_engine(url)
                Base.metadata.create_all(engine)
                engine.dispose()

    def drop(self) -> None:
        for engine in self._engines.values():
            engine.dispose()
        self._engines.clear()
        shutil.rmtree(self.tmp, ignore_errors=True)
        drop_schemas(self.pg_schemas)

    def settings_env(self, backend: str, telegram_base: str, lagging_reads: bool) -> dict:
        primary, standby = self.database_urls(backend)
        return {
            "GRIMBOTS_DATABASE_URL": primary,
            "GRIMBOTS_DATABASE_READ_URL": standby if lagging_reads else "",
            "GRIMBOTS_DATABASE_POOL_SIZE": "4",
            "GRIMBOTS_REDIS_URL": self.redis_url,
            "GRIMBOTS_REDIS_MAX_CONNECTIONS": "20",
            "GRIMBOTS_REDIS_SOCKET_TIMEOUT": "2",
            "TELEGRAM_API_BASE": telegram_base,
            "GRIMBOTS_GATEWAY_SECRETS": f"sandbox:{GATEWAY_SECRET}",
            "GRIMBOTS_TELEGRAM_MAX_RETRIES": "2",
            "GRIMBOTS_TELEGRAM_TIMEOUT": str(TELEGRAM_TIMEOUT),
            "GRIMBOTS_LOG_LEVEL": "CRITICAL",
        }

    def settings(self, backend: str, telegram_base: str, lagging_reads: bool) -> Settings:
        return Settings.from_env(self.settings_env(backend, telegram_base, lagging_reads))

    def shift_time(self, backend: str, seconds: int) -> None:
        """Time passes for the database: every timestamp of both copies moves `seconds` into
        the past, so leases lapse and grace times run out as they would in real time."""
        for url in self.database_urls(backend):
            engine = self.engine(url)
            with engine.begin() as conn:
                for table in Base.metadata.sorted_tables:
                    columns = [c.name for c in table.columns if isinstance(c.type, UTCDateTime)]
                    if not columns:
                        continue
                    if engine.dialect.name == "postgresql":
                        sets = ", ".join(
                            f'"{c}" = "{c}" - make_interval(secs => {int(seconds)})'
                            for c in columns
                        )
                    else:
                        # SQLAlchemy's SQLite text format, microseconds kept to the millisecond.
                        sets = ", ".join(
                            f'"{c}" = strftime(\'%Y-%m-%d %H:%M:%f\', "{c}", '
                            f"'-{int(seconds)} seconds') || '000'"
                            for c in columns
                        )
                    # Names from the app's own metadata, a number: never input.
                    conn.execute(text(f'UPDATE "{table.name}" SET {sets}'))  # noqa: S608

    def engine(self, url: str):
        """One engine per URL for the lane's own housekeeping (not the app's)."""
        if url not in self._engines:
            self._engines[url] = db_module.make_engine(url, pool_size=1, max_overflow=1)
        return self._engines[url]

    def clear_tables(self, backend: str) -> None:
        """Empty the lane's primary tables. Scenarios do not need it (each has its own seller,
        bot and leads, and every check is scoped to its bot); kept for debugging a lane."""
        for url in self.database_urls(backend)[:1]:
            engine = self.engine(url)
            with engine.begin() as conn:
                if engine.dialect.name == "postgresql":
                    names = ", ".join(f'"{t.name}"' for t in Base.metadata.sorted_tables)
                    conn.execute(text(f"TRUNCATE {names} CASCADE"))
                else:
                    for table in reversed(Base.metadata.sorted_tables):
                        conn.execute(table.delete())


class Standby:
    """A read URL that lags: the standby copy is refreshed from the primary only when told."""

    def __init__(self, lane: Lane, backend: str) -> None:
        self.lane = lane
        self.backend = backend
        self.refreshes = 0

    def catch_up(self) -> None:
        primary, standby = self.lane.database_urls(self.backend)
        if self.backend == "sqlite":
            src = sqlite3.connect(primary.removeprefix("sqlite:///"))
            dst = sqlite3.connect(standby.removeprefix("sqlite:///"))
            try:
                src.backup(dst)
            finally:
                src.close()
                dst.close()
        else:
            engine = self.lane.engine(primary)
            schema, standby_schema = self.lane.pg_schemas
            tables = Base.metadata.sorted_tables
            with engine.begin() as conn:
                names = ", ".join(f'"{standby_schema}"."{t.name}"' for t in tables)
                conn.execute(text(f"TRUNCATE {names} CASCADE"))
                for table in tables:
                    # Names from the app's own metadata and the lane number, never from input.
                    copy = f'INSERT INTO "{standby_schema}"."{table.name}" SELECT * FROM "{schema}"."{table.name}"'  # noqa: S608, E501
                    conn.execute(text(copy))
        self.refreshes += 1


def drop_schemas(schemas) -> list[str]:
    """Drop these schemas, each on its own, best effort: one that a leftover session still
    locks is skipped after DROP_LOCK_TIMEOUT. Returns the ones dropped."""
    dropped = []
    admin = create_engine(db_module.normalize_database_url(PG_URL), poolclass=NullPool)
    try:
        for schema in schemas:
            try:
                with admin.begin() as conn:
                    conn.execute(text(f"SET LOCAL lock_timeout = '{DROP_LOCK_TIMEOUT}'"))
                    conn.execute(text(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE'))
                dropped.append(schema)
            except Exception:  # noqa: BLE001, S112 - locked or gone: the next run's sweep
                continue
    finally:
        admin.dispose()
    return dropped


class RunSchemas:
    """A run's claim on its schema names: holds the run's advisory lock while the run lasts,
    drops the schemas of runs that hold no lock any more (crashed, killed), and, on close, the
    run's own schemas (also those of lanes killed before they could drop theirs)."""

    def __init__(self, run_id: str) -> None:
        self.run_id = run_id
        self._engine = create_engine(db_module.normalize_database_url(PG_URL), poolclass=NullPool)
        self._conn = self._engine.connect()
        self._conn.execute(
            text("SELECT pg_advisory_lock(:c, :k)"), {"c": RUN_LOCK_CLASS, "k": run_key(run_id)}
        )
        self._conn.commit()

    def _schemas(self) -> list[str]:
        rows = self._conn.execute(
            text("SELECT nspname FROM pg_namespace WHERE nspname LIKE 'faults\\_r%'")
        )
        names = [row[0] for row in rows]
        self._conn.commit()
        return names

    def _live_keys(self) -> set[int]:
        rows = self._conn.execute(
            text(
                "SELECT objid::bigint FROM pg_locks WHERE locktype = 'advisory' AND granted"
                " AND classid = :c AND objsubid = 2"
                " AND database = (SELECT oid FROM pg_database WHERE datname = current_database())"
            ),
            {"c": RUN_LOCK_CLASS},
        )
        keys = {int(row[0]) for row in rows}
        self._conn.commit()
        return keys

    def sweep_stale(self) -> list[str]:
        """Drop the schemas of fault runs that are over without having dropped them."""
        live = self._live_keys()
        stale = []
        for name in self._schemas():
            match = RUN_SCHEMA.match(name)
            if match and int(match.group(1), 16) not in live:
                stale.append(name)
        return drop_schemas(stale)

    def close(self) -> None:
        mine = [n for n in self._schemas() if n.startswith(f"faults_{self.run_id}_")]
        drop_schemas(mine)
        try:
            self._conn.close()  # the session's end releases the advisory lock
        finally:
            self._engine.dispose()

    def __enter__(self) -> RunSchemas:
        return self

    def __exit__(self, *exc) -> None:
        self.close()
