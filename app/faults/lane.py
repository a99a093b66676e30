"""One lane: the private Redis database, PostgreSQL schemas and SQLite files a lane process
uses, so lanes run scenarios in parallel without seeing each other's queues or rows."""

from __future__ import annotations

import os
import shutil
import socket
import sqlite3
import subprocess
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import quote

from sqlalchemy import create_engine, text

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
        self.port = free_port(first, max(first, port_range[1]))
        self.dir = tempfile.mkdtemp(prefix="grimbots-faults-redis-")
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
        while time.monotonic() < deadline:
            with socket.socket() as sock:
                if sock.connect_ex(("127.0.0.1", self.port)) == 0:
                    return
            time.sleep(0.05)
        self.stop()
        raise RuntimeError("redis-server did not start")

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
    tmp: Path = field(default_factory=lambda: Path(tempfile.mkdtemp(prefix="grimbots-faults-")))
    _engines: dict = field(default_factory=dict)

    @property
    def pg_schema(self) -> str:
        return f"faults_lane{self.index}"

    def database_urls(self, backend: str) -> tuple[str, str]:
        """(primary, lagging standby) URLs of this lane for a backend."""
        if backend == "sqlite":
            return f"sqlite:///{self.tmp / 'primary.db'}", f"sqlite:///{self.tmp / 'standby.db'}"
        return _pg_schema_url(self.pg_schema), _pg_schema_url(f"{self.pg_schema}_standby")

    def prepare(self) -> None:
        """Create the lane's schemas (PostgreSQL) and files (SQLite), empty."""
        admin = create_engine(db_module.normalize_database_url(PG_URL))
        with admin.begin() as conn:
            for schema in (self.pg_schema, f"{self.pg_schema}_standby"):
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
        admin = create_engine(db_module.normalize_database_url(PG_URL))
        with admin.begin() as conn:
            for schema in (self.pg_schema, f"{self.pg_schema}_standby"):
                conn.execute(text(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE'))
        admin.dispose()
        shutil.rmtree(self.tmp, ignore_errors=True)

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
            schema, standby_schema = self.lane.pg_schema, f"{self.lane.pg_schema}_standby"
            tables = Base.metadata.sorted_tables
            with engine.begin() as conn:
                names = ", ".join(f'"{standby_schema}"."{t.name}"' for t in tables)
                conn.execute(text(f"TRUNCATE {names} CASCADE"))
                for table in tables:
                    # Names from the app's own metadata and the lane number, never from input.
                    copy = f'INSERT INTO "{standby_schema}"."{table.name}" SELECT * FROM "{schema}"."{table.name}"'  # noqa: S608, E501
                    conn.execute(text(copy))
        self.refreshes += 1
