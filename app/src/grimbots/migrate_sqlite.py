"""Move every row of a phase-1 SQLite database into PostgreSQL, safely and repeatably.

Phase 2 runs this once with the writers stopped; running it again must change nothing, and an
interrupted run must resume without duplicates. Hence: a consistent backup first (the rollback,
and the snapshot the rows are read from), the PostgreSQL schema brought to head by the same
migrations, tables copied in foreign-key order in small transactions with
``INSERT ... ON CONFLICT (id) DO NOTHING`` (ids are kept, so foreign keys stay valid), every
SQLite id checked to be present afterwards, and each sequence moved past the copied ids so the
app's next insert gets a fresh id.
"""

from __future__ import annotations

import json
import logging
import os
import sqlite3
import time
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from sqlalchemy import Boolean, DateTime, Engine, Integer, Table, func, select, text
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.engine import make_url
from sqlalchemy.exc import ArgumentError, DBAPIError, IntegrityError
from sqlalchemy.types import JSON, String

from grimbots import migrations_runner
from grimbots.cleantext import strip_nul
from grimbots.db import make_engine, normalize_database_url
from grimbots.models import TABLES_IN_FK_ORDER, Base

log = logging.getLogger(__name__)

SQLITE_MAGIC = b"SQLite format 3\x00"


class MigrationError(RuntimeError):
    """The migration cannot start or did not validate; the message says what to do."""


@dataclass
class TableReport:
    name: str
    source_rows: int = 0
    copied: int = 0
    already_present: int = 0
    target_rows: int = 0
    # Highest id in SQLite, and how many PostgreSQL ids are <= it (must equal source_rows).
    source_max_id: int | None = None
    target_ids_up_to_max: int = 0
    # The sequence's value after the reset: the next insert gets sequence_value + 1.
    sequence_value: int | None = None
    batches: int = 0
    # Text values that held NUL (PostgreSQL's text cannot): copied with the NULs removed.
    nul_cleaned: int = 0


@dataclass
class MigrationReport:
    sqlite_path: str
    postgres: str
    backup_path: str
    batch_size: int
    schema_revision: str = ""
    postgres_schema_upgraded: bool = False
    tables: list[TableReport] = field(default_factory=list)
    started_at: str = ""
    seconds: float = 0.0

    @property
    def copied(self) -> int:
        return sum(t.copied for t in self.tables)

    @property
    def nul_cleaned(self) -> int:
        return sum(t.nul_cleaned for t in self.tables)

    @property
    def nothing_to_copy(self) -> bool:
        return self.copied == 0

    @property
    def message(self) -> str:
        if self.nothing_to_copy:
            return "nothing to copy: PostgreSQL already holds every SQLite row"
        return f"copied {self.copied} rows into PostgreSQL; counts validated"

    def as_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["copied"] = self.copied
        data["nul_cleaned"] = self.nul_cleaned
        data["nothing_to_copy"] = self.nothing_to_copy
        data["message"] = self.message
        return data


def _after_batch(table: str, batch_number: int, inserted: int) -> None:
    """Called after each committed batch (logging; tests interrupt a run from here)."""
    log.debug("table %s batch %d committed (%d rows inserted)", table, batch_number, inserted)


# --- input checks ------------------------------------------------------------------------


def _check_sqlite_file(path: Path) -> None:
    if not path.exists():
        raise MigrationError(f"SQLite database not found: {path}")
    if not path.is_file():
        raise MigrationError(f"SQLite path is not a file: {path}")
    with path.open("rb") as fh:
        header = fh.read(len(SQLITE_MAGIC))
    if header != SQLITE_MAGIC:
        raise MigrationError(f"not a SQLite database (bad file header): {path}")


def _check_sqlite_schema(conn: sqlite3.Connection, path: Path, head: str) -> None:
    has_version = conn.execute(
        "SELECT 1 FROM sqlite_master WHERE type='table' AND name='alembic_version'"
    ).fetchone()
    revision = None
    if has_version:
        row = conn.execute("SELECT version_num FROM alembic_version").fetchone()
        revision = row[0] if row else None
    if revision != head:
        raise MigrationError(
            f"SQLite schema of {path} is at revision {revision or 'none'}, not at head {head}: "
            f"run `GRIMBOTS_DATABASE_URL=sqlite:///{path} grimbots db upgrade` first"
        )
    present = {
        r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type='table'").fetchall()
    }
    missing = [name for name in TABLES_IN_FK_ORDER if name not in present]
    if missing:
        raise MigrationError(f"SQLite database {path} lacks tables: {', '.join(missing)}")


def _display_url(url: str) -> str:
    try:
        return make_url(normalize_database_url(url)).render_as_string(hide_password=True)
    except ArgumentError:
        return "<unparsable URL>"


def _postgres_engine(url: str) -> Engine:
    normalized = normalize_database_url(url or "")
    if not normalized.startswith("postgresql"):
        raise MigrationError(
            "not a PostgreSQL URL (expected postgresql://user:password@host:5432/db, "
            f"hosts may be a comma-separated list): {_display_url(url)!s}"
        )
    try:
        engine = make_engine(normalized, pool_size=2, max_overflow=0)
    except (ArgumentError, ValueError) as exc:
        raise MigrationError(f"bad PostgreSQL URL {_display_url(url)}: {exc}") from exc
    try:
        with engine.connect() as conn:
            conn.execute(text("SELECT 1"))
            if conn.execute(text("SELECT pg_is_in_recovery()")).scalar():
                raise MigrationError(
                    f"PostgreSQL at {_display_url(url)} is a read-only standby; "
                    "use the primary (target_session_attrs=read-write)"
                )
    except DBAPIError as exc:
        engine.dispose()
        reason = str(getattr(exc, "orig", exc)).strip().splitlines()[0]
        raise MigrationError(
            f"cannot connect to PostgreSQL at {_display_url(url)}: {reason}"
        ) from exc
    return engine


# --- backup ------------------------------------------------------------------------------


def _backup(path: Path, backup_dir: Path | None) -> Path:
    """Copy the database with SQLite's online backup API (consistent even in WAL mode)."""
    target_dir = backup_dir or path.parent
    target_dir.mkdir(parents=True, exist_ok=True)
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
    target = target_dir / f"grimbots-{stamp}.db"
    n = 1
    while target.exists():
        target = target_dir / f"grimbots-{stamp}-{n}.db"
        n += 1
    src = sqlite3.connect(str(path))
    dst = sqlite3.connect(str(target))
    try:
        src.backup(dst)
        # The copy is the rollback: make it a plain rollback-journal file that opens anywhere.
        dst.execute("PRAGMA journal_mode=DELETE")
        ok = dst.execute("PRAGMA quick_check").fetchone()[0]
    except sqlite3.DatabaseError as exc:
        raise MigrationError(f"backup of {path} to {target} failed: {exc}") from exc
    finally:
        dst.close()
        src.close()
    if ok != "ok":
        raise MigrationError(f"backup {target} failed its integrity check: {ok}")
    return target


# --- type conversion SQLite -> PostgreSQL ----------------------------------------------


def _to_datetime(value: Any) -> datetime | None:
    if value is None or isinstance(value, datetime):
        dt = value
    elif isinstance(value, int | float):
        dt = datetime.fromtimestamp(value, UTC)
    else:
        raw = value.decode() if isinstance(value, bytes) else str(value)
        raw = raw.strip()
        if raw.endswith("Z"):
            raw = raw[:-1] + "+00:00"
        dt = datetime.fromisoformat(raw)
    if dt is not None and dt.tzinfo is None:
        # The app writes UTC; SQLite drops the offset when storing.
        dt = dt.replace(tzinfo=UTC)
    return dt


def _to_bool(value: Any) -> bool | None:
    if value is None or isinstance(value, bool):
        return value
    if isinstance(value, int | float):
        return bool(value)
    raw = (value.decode() if isinstance(value, bytes) else str(value)).strip().lower()
    if raw in ("1", "true", "t", "yes", "y"):
        return True
    if raw in ("0", "false", "f", "no", "n", ""):
        return False
    raise ValueError(f"not a boolean: {value!r}")


def _to_json(value: Any) -> Any:
    if isinstance(value, bytes):
        value = value.decode()
    if isinstance(value, str):
        return json.loads(value)
    return value


def _to_int(value: Any) -> int | None:
    if value is None or isinstance(value, int):
        return value
    return int(value)


def _to_str(value: Any) -> str | None:
    if value is None or isinstance(value, str):
        return value
    if isinstance(value, bytes):
        return value.decode()
    return str(value)


def _converters(table: Table) -> dict[str, Any]:
    conv: dict[str, Any] = {}
    for column in table.columns:
        ctype = column.type
        if isinstance(ctype, Boolean):
            conv[column.name] = _to_bool
        elif isinstance(ctype, DateTime):
            conv[column.name] = _to_datetime
        elif isinstance(ctype, JSON):
            conv[column.name] = _to_json
        elif isinstance(ctype, Integer):
            conv[column.name] = _to_int
        elif isinstance(ctype, String):
            conv[column.name] = _to_str
        else:
            conv[column.name] = lambda v: v
    return conv


def _convert(
    table: Table, conv: dict[str, Any], row: sqlite3.Row, report: TableReport
) -> dict[str, Any]:
    out = {}
    for name in row.keys():  # noqa: SIM118 - sqlite3.Row is not a mapping
        try:
            value = conv[name](row[name])
        except (ValueError, TypeError) as exc:
            # Names the cell, never quotes it (a value may be a token or a user's text).
            raise MigrationError(
                f"{table.name} id {row['id']}: cannot convert column {name} "
                f"({type(exc).__name__}; value not shown)"
            ) from None
        if isinstance(value, str):
            value, cleaned = strip_nul(value)
            report.nul_cleaned += cleaned
        out[name] = value
    return out


# --- the copy ----------------------------------------------------------------------------


def _batches(conn: sqlite3.Connection, table: Table, size: int) -> Iterator[list[sqlite3.Row]]:
    """Rows in id order, by keyset pagination (constant memory, stable across batches)."""
    columns = ", ".join(f'"{c.name}"' for c in table.columns)
    last = None
    while True:
        if last is None:
            rows = conn.execute(
                f'SELECT {columns} FROM "{table.name}" ORDER BY id LIMIT ?',  # noqa: S608
                (size,),
            ).fetchall()
        else:
            rows = conn.execute(
                f'SELECT {columns} FROM "{table.name}" WHERE id > ? ORDER BY id LIMIT ?',  # noqa: S608
                (last, size),
            ).fetchall()
        if not rows:
            return
        yield rows
        last = rows[-1]["id"]


def _copy_table(
    src: sqlite3.Connection, engine: Engine, table: Table, batch_size: int
) -> TableReport:
    report = TableReport(name=table.name)
    count, max_id = src.execute(
        f'SELECT count(*), max(id) FROM "{table.name}"'  # noqa: S608
    ).fetchone()
    report.source_rows, report.source_max_id = count, max_id
    conv = _converters(table)
    for rows in _batches(src, table, batch_size):
        values = [_convert(table, conv, row, report) for row in rows]
        stmt = (
            pg_insert(table)
            .values(values)
            .on_conflict_do_nothing(index_elements=["id"])
            .returning(table.c.id)
        )
        try:
            with engine.begin() as conn:
                inserted = len(conn.execute(stmt).fetchall())
        except IntegrityError as exc:
            reason = str(exc.orig).strip().splitlines()[0]
            raise MigrationError(
                f"{table.name}: rows with ids {rows[0]['id']}..{rows[-1]['id']} conflict with "
                f"different rows already in PostgreSQL ({reason}); was the app already writing "
                "to PostgreSQL?"
            ) from exc
        report.batches += 1
        report.copied += inserted
        report.already_present += len(rows) - inserted
        _after_batch(table.name, report.batches, inserted)
    return report


def _validate_and_reset_sequence(engine: Engine, table: Table, report: TableReport) -> None:
    with engine.begin() as conn:
        report.target_rows = conn.execute(select(func.count()).select_from(table)).scalar_one()
        if report.source_max_id is not None:
            report.target_ids_up_to_max = conn.execute(
                select(func.count()).select_from(table).where(table.c.id <= report.source_max_id)
            ).scalar_one()
        seq = conn.execute(
            text("SELECT pg_get_serial_sequence(:t, 'id')"), {"t": table.name}
        ).scalar()
        if seq is None:
            return
        target_max = conn.execute(select(func.max(table.c.id))).scalar()
        last_value, is_called = conn.execute(
            text(f"SELECT last_value, is_called FROM {seq}")  # noqa: S608 - name from PostgreSQL
        ).one()
        # Never move a sequence backwards: ids handed out once must not be handed out again.
        value = max(target_max or 0, last_value if is_called else 0)
        if value:
            conn.execute(text("SELECT setval(:s, :v, true)"), {"s": seq, "v": value})
        else:
            conn.execute(text("SELECT setval(:s, 1, false)"), {"s": seq})
        report.sequence_value = value or None


def _check_sqlite_readable(path: Path, head: str) -> None:
    """Open the SQLite file and check its schema is at `head`; MigrationError otherwise."""
    try:
        # Not mode=ro: a WAL database may need its -shm file created to be read at all.
        probe = sqlite3.connect(str(path))
        try:
            _check_sqlite_schema(probe, path, head)
        finally:
            probe.close()
    except sqlite3.DatabaseError as exc:
        raise MigrationError(f"cannot read SQLite database {path}: {exc}") from exc


def _copy_tables(backup: Path, engine: Engine, report: MigrationReport) -> None:
    """Copy and validate every table, parents first, adding each table's report to `report`.

    Reads from the backup: a consistent snapshot of every table, and exactly the rows the
    rollback file holds.
    """
    src = sqlite3.connect(f"file:{backup}?mode=ro", uri=True)
    src.row_factory = sqlite3.Row
    try:
        for name in TABLES_IN_FK_ORDER:
            table = Base.metadata.tables[name]
            table_report = _copy_table(src, engine, table, report.batch_size)
            _validate_and_reset_sequence(engine, table, table_report)
            report.tables.append(table_report)
            log.info(
                "table %s: %d source rows, %d copied, %d already present, %d in PostgreSQL, "
                "%d text values stripped of NUL",
                name,
                table_report.source_rows,
                table_report.copied,
                table_report.already_present,
                table_report.target_rows,
                table_report.nul_cleaned,
            )
    finally:
        src.close()


def migrate(
    sqlite_path: str | os.PathLike[str],
    postgres_url: str,
    *,
    batch_size: int = 1000,
    backup_dir: str | os.PathLike[str] | None = None,
) -> MigrationReport:
    """Copy a SQLite database into PostgreSQL; safe to run again (copies nothing the 2nd time).

    Raises MigrationError, before anything changes, for a missing or non-SQLite file, a SQLite
    schema not at head, or an unreachable PostgreSQL; and after the copy if PostgreSQL does not
    hold every SQLite id.
    """
    if batch_size < 1:
        raise MigrationError(f"batch size must be at least 1, got {batch_size}")
    started = time.monotonic()
    path = Path(sqlite_path).expanduser().resolve()
    _check_sqlite_file(path)
    head = migrations_runner.head_revision()
    _check_sqlite_readable(path, head)

    engine = _postgres_engine(postgres_url)
    try:
        backup = _backup(path, Path(backup_dir).expanduser().resolve() if backup_dir else None)
        log.info("SQLite backup written to %s", backup)
        report = MigrationReport(
            sqlite_path=str(path),
            postgres=_display_url(postgres_url),
            backup_path=str(backup),
            batch_size=batch_size,
            schema_revision=head,
            started_at=datetime.now(UTC).isoformat(timespec="seconds"),
        )
        try:
            report.postgres_schema_upgraded = migrations_runner.upgrade(postgres_url)
        except DBAPIError as exc:
            raise MigrationError(f"upgrading the PostgreSQL schema failed: {exc}") from exc

        _copy_tables(backup, engine, report)
    finally:
        engine.dispose()

    report.seconds = round(time.monotonic() - started, 3)
    mismatched = [
        f"{t.name} (SQLite {t.source_rows} rows up to id {t.source_max_id}, "
        f"PostgreSQL {t.target_ids_up_to_max})"
        for t in report.tables
        if t.target_ids_up_to_max != t.source_rows
    ]
    if mismatched:
        raise MigrationError(
            "counts do not match after the copy: " + "; ".join(mismatched) + f". Backup: {backup}"
        )
    return report
