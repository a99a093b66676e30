"""Apply the Alembic migrations that ship inside the package, without an alembic.ini.

Every host runs ``grimbots db upgrade`` from the installed wheel, so the script location is the
package directory and the database URL is the app's own (libpq multi-host URLs included, through
``grimbots.db``). On PostgreSQL an advisory lock serialises upgrades, so app nodes that start at
the same time cannot apply the same revision twice.
"""

from __future__ import annotations

from pathlib import Path

from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import Connection, text

from grimbots.db import make_engine

MIGRATIONS_DIR = Path(__file__).resolve().parent / "migrations"
# Arbitrary constant key for pg_advisory_lock ("grimbots" as a number).
_ADVISORY_LOCK_KEY = 0x6772696D626F7473


def alembic_config(connection: Connection | None = None) -> Config:
    """An Alembic Config pointing at the packaged migrations (for the runner and for tools)."""
    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS_DIR))
    if connection is not None:
        cfg.attributes["connection"] = connection
    return cfg


def head_revision() -> str:
    """The single head revision of the packaged migrations."""
    heads = ScriptDirectory.from_config(alembic_config()).get_heads()
    if len(heads) != 1:
        raise RuntimeError(f"expected one migration head, found {heads}")
    return heads[0]


def _current(conn: Connection) -> str | None:
    return MigrationContext.configure(conn).get_current_revision()


def current(database_url: str) -> str | None:
    """The revision the database is at, or None when it has never been migrated."""
    engine = make_engine(database_url)
    try:
        with engine.connect() as conn:
            return _current(conn)
    finally:
        engine.dispose()


def upgrade(database_url: str) -> bool:
    """Bring the database to head; True when a revision was applied, False when already there."""
    engine = make_engine(database_url)
    try:
        with engine.connect() as conn:
            postgres = conn.dialect.name == "postgresql"
            if postgres:
                conn.execute(text("SELECT pg_advisory_lock(:k)"), {"k": _ADVISORY_LOCK_KEY})
                conn.commit()
            else:
                # Batch migrations rebuild SQLite tables; foreign keys must be off meanwhile
                # (the pragma is a no-op inside a transaction, so set it before one starts).
                conn.exec_driver_sql("PRAGMA foreign_keys=OFF")
                conn.commit()
            try:
                before = _current(conn)
                conn.commit()
                head = head_revision()
                if before == head:
                    return False
                command.upgrade(alembic_config(conn), "head")
                conn.commit()
                return _current(conn) != before
            finally:
                conn.rollback()
                if postgres:
                    conn.execute(text("SELECT pg_advisory_unlock(:k)"), {"k": _ADVISORY_LOCK_KEY})
                    conn.commit()
                else:
                    conn.exec_driver_sql("PRAGMA foreign_keys=ON")
                    conn.commit()
    finally:
        engine.dispose()
