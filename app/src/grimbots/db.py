"""Database engines and transactions.

SQLite (phase 1) runs in WAL mode with a busy timeout so readers never block the writer.
PostgreSQL (phase 2+) is reached through a libpq multi-host URL with
target_session_attrs=read-write; a transaction that fails because the primary changed is
retried once on a fresh connection.
"""

from __future__ import annotations

import json
import logging
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import TypeVar
from urllib.parse import parse_qsl, quote, urlencode, urlsplit

from sqlalchemy import Engine, create_engine, event
from sqlalchemy.exc import DBAPIError, OperationalError
from sqlalchemy.orm import Session, sessionmaker
from sqlalchemy.pool import QueuePool

log = logging.getLogger(__name__)
T = TypeVar("T")

# SQLSTATEs that mean "this server is no longer (or not yet) the primary": retry once.
_FAILOVER_SQLSTATES = {"25006", "57P01", "57P02", "57P03", "08000", "08001", "08003", "08006"}


def normalize_database_url(url: str) -> str:
    """Turn a libpq URL (possibly multi-host) into the SQLAlchemy psycopg 3 form.

    libpq writes several hosts as ``postgresql://u:p@h1:5432,h2:5432/db``; SQLAlchemy wants one
    ``host=h:p`` query parameter per host.
    """
    if url.startswith("postgres://"):
        url = "postgresql://" + url[len("postgres://") :]
    if not url.startswith("postgresql"):
        return url
    scheme, rest = url.split("://", 1)
    if scheme in ("postgresql", "postgresql+psycopg2"):
        scheme = "postgresql+psycopg"
    parts = urlsplit("x://" + rest)
    netloc = parts.netloc
    userinfo, _, hostlist = netloc.rpartition("@")
    if "," not in hostlist:
        return f"{scheme}://{rest}"
    query = parse_qsl(parts.query, keep_blank_values=True)
    hosts = [("host", h if ":" in h else f"{h}:5432") for h in hostlist.split(",") if h]
    auth = f"{userinfo}@" if userinfo else ""
    return f"{scheme}://{auth}{parts.path}?{urlencode(hosts + query, quote_via=quote, safe=':,')}"


def make_engine(url: str, pool_size: int = 10, max_overflow: int = 5) -> Engine:
    url = normalize_database_url(url)
    if url.startswith("sqlite"):
        engine = create_engine(
            url,
            connect_args={"timeout": 30, "check_same_thread": False},
            hide_parameters=True,  # error text never carries bound values (tokens, user text)
        )

        @event.listens_for(engine, "connect")
        def _sqlite_pragmas(dbapi_conn, _record):  # pragma: no cover - trivial
            cur = dbapi_conn.cursor()
            cur.execute("PRAGMA journal_mode=WAL")
            cur.execute("PRAGMA synchronous=NORMAL")
            cur.execute("PRAGMA foreign_keys=ON")
            cur.execute("PRAGMA busy_timeout=30000")
            cur.close()

        _track_pool_use(engine)
        return engine
    engine = create_engine(
        url,
        pool_pre_ping=True,
        pool_size=pool_size,
        max_overflow=max_overflow,
        pool_timeout=10,
        pool_recycle=1800,
        hide_parameters=True,  # error text never carries bound values (tokens, user text)
        # A URL's own connect_timeout wins: a short one moves past a dead host faster.
        connect_args={} if "connect_timeout=" in url else {"connect_timeout": 5},
    )
    _track_pool_use(engine)
    return engine


def _track_pool_use(engine: Engine) -> None:
    """Keep the grimbots_db_pool_connections_in_use gauge in step with checkouts (every
    process, web and workers)."""
    from grimbots.metrics import DB_POOL_IN_USE

    event.listen(engine, "checkout", lambda *_: DB_POOL_IN_USE.inc())
    event.listen(engine, "checkin", lambda *_: DB_POOL_IN_USE.dec())


def pool_bound(engine: Engine) -> int:
    """Connections the engine's pool may open at once: pool size plus overflow."""
    pool = engine.pool
    if isinstance(pool, QueuePool):
        return pool.size() + max(pool._max_overflow, 0)  # noqa: SLF001 - no public getter
    return 1  # one connection per thread (in-memory SQLite in tests)


def _sqlstate(exc: Exception) -> str | None:
    orig = getattr(exc, "orig", None)
    return getattr(orig, "sqlstate", None) or getattr(orig, "pgcode", None)


def _jsonable(value):
    """A result as JSON stores it (tuples as lists); anything else stored as its text."""
    try:
        return json.loads(json.dumps(value))
    except (TypeError, ValueError):
        return None


def _is_failover_error(exc: Exception) -> bool:
    if isinstance(exc, DBAPIError) and exc.connection_invalidated:
        return True
    orig = getattr(exc, "orig", None)
    sqlstate = getattr(orig, "sqlstate", None) or getattr(orig, "pgcode", None)
    if sqlstate in _FAILOVER_SQLSTATES:
        return True
    return isinstance(exc, OperationalError) and "read-only" in str(exc).lower()


class Database:
    """Engines and session factories; the only database global of a process."""

    def __init__(self, url: str, read_url: str = "", pool_size: int = 10, max_overflow: int = 5):
        self.url = url
        self.engine = make_engine(url, pool_size, max_overflow)
        self.read_engine = make_engine(read_url, pool_size, max_overflow) if read_url else None
        self._sessions = sessionmaker(self.engine, expire_on_commit=False)
        self._read_sessions = (
            sessionmaker(self.read_engine, expire_on_commit=False) if self.read_engine else None
        )

    @property
    def pool_bound(self) -> int:
        """Connections this process may hold at once, over both engines."""
        return sum(pool_bound(e) for e in (self.engine, self.read_engine) if e is not None)

    @property
    def is_sqlite(self) -> bool:
        return self.engine.dialect.name == "sqlite"

    @contextmanager
    def session(self) -> Iterator[Session]:
        """A session whose transaction commits on success and rolls back on error."""
        with self._sessions() as session, session.begin():
            yield session

    @contextmanager
    def read_session(self) -> Iterator[Session]:
        """A read-only session, on a standby when a read URL is configured."""
        factory = self._read_sessions or self._sessions
        with factory() as session:
            yield session

    def transaction(self, fn: Callable[[Session], T], key: str | None = None) -> T:
        """Run fn in a transaction; retry once if the primary changed underneath it.

        The transaction also writes an idempotency row (`key`, or a fresh one) holding fn's
        result. A commit can succeed while its answer is lost with the connection: the retry
        then finds the row and returns the stored result instead of running fn again, so no
        retried transaction has a double effect. With a caller's `key` (an API Idempotency-Key),
        a later call with the same key also gets the first result back. fn's result must be
        JSON-serialisable (tuples come back as lists).
        """
        if key is not None and (stored := self._stored_result(key)) is not None:
            return stored[0]
        key = key or f"tx:{uuid.uuid4().hex}"
        try:
            return self._run_once(fn, key)
        except (OperationalError, DBAPIError) as exc:
            if not _is_failover_error(exc):
                raise
            log.warning(
                "database primary changed, retrying transaction once",
                extra={"error": type(exc.orig or exc).__name__, "sqlstate": _sqlstate(exc)},
            )
            self.engine.dispose()
            time.sleep(0.5)
            if (stored := self._stored_result(key)) is not None:
                return stored[0]
            return self._run_once(fn, key)

    def _run_once(self, fn: Callable[[Session], T], key: str) -> T:
        from grimbots.models import IdempotencyKey

        with self.session() as session:
            result = fn(session)
            session.add(IdempotencyKey(key=key, result={"value": _jsonable(result)}))
            return result

    def _stored_result(self, key: str) -> tuple | None:
        """(result,) of a transaction that committed under this key, or None."""
        from sqlalchemy import select

        from grimbots.models import IdempotencyKey

        with self.session() as session:
            row = session.scalar(select(IdempotencyKey.result).where(IdempotencyKey.key == key))
        if row is None:
            return None
        return (row.get("value"),)

    def pool_in_use(self) -> int:
        pool = self.engine.pool
        checked_out = getattr(pool, "checkedout", None)
        return int(checked_out()) if callable(checked_out) else 0

    def dispose(self) -> None:
        self.engine.dispose()
        if self.read_engine is not None:
            self.read_engine.dispose()


_db: Database | None = None
_db_lock = threading.Lock()


def get_db(settings=None) -> Database:
    """The process-wide Database, created on first use (after fork in Gunicorn/RQ workers)."""
    global _db
    if _db is None:
        with _db_lock:
            if _db is None:
                if settings is None:
                    from grimbots.settings import Settings

                    settings = Settings.from_env()
                _db = Database(
                    settings.database_url,
                    settings.database_read_url,
                    settings.database_pool_size,
                    settings.database_max_overflow,
                )
                # Per process; /metrics sums the processes, as it does the in-use gauge.
                from grimbots.metrics import DB_POOL_MAX

                DB_POOL_MAX.set(_db.pool_bound)
    return _db


def reset_db() -> None:
    """Forget the process-wide Database (tests, and after fork)."""
    global _db
    with _db_lock:
        if _db is not None:
            _db.dispose()
        _db = None
