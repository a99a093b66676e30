"""SQLite -> PostgreSQL: every row arrives once, typed, resumable; bad input is refused."""

from __future__ import annotations

import json
import re
import sqlite3
import traceback
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from click.testing import CliRunner
from conftest import PG_URL
from sqlalchemy import insert, select, text
from sqlalchemy.engine import make_url
from test_migrations import drop_pg_database, fresh_pg_database

from grimbots import migrate_sqlite, migrations_runner
from grimbots.cli import main
from grimbots.db import make_engine
from grimbots.migrate_sqlite import MigrationError, migrate
from grimbots.models import (
    TABLES_IN_FK_ORDER,
    Base,
    BlockedUser,
    Bot,
    Campaign,
    Click,
    Downsell,
    Funnel,
    IdempotencyKey,
    InboundUpdate,
    Lead,
    Offer,
    OutboundMessage,
    Payment,
    PoolBot,
    RedirectPool,
    Seller,
)

# Named after the test database (see test_migrations.PG_DB).
PG_DB = f"{make_url(PG_URL).database}_migrate_sqlite"
N_CLICKS = 2600
N_MESSAGES = 2700
N_LEADS = 400
BIG = 2**31 + 12345  # Telegram ids outgrow 32 bits
T0 = datetime(2025, 3, 1, 12, 30, 15, 123456, tzinfo=UTC)


@pytest.fixture
def pg_url():
    url = fresh_pg_database(PG_DB)
    yield url
    drop_pg_database(PG_DB)


def _seed(url: str) -> None:
    """Rows in every table, all foreign keys valid, big tables over 2,500 rows."""
    engine = make_engine(url)
    with engine.begin() as conn:
        conn.execute(
            insert(Seller),
            [
                {
                    "id": i,
                    "name": f"Vendedor {i}",
                    "email": f"s{i}@x.br",
                    "api_token_hash": f"{i:064x}",
                    "created_at": T0,
                }
                for i in (1, 2)
            ],
        )
        conn.execute(
            insert(Funnel),
            [
                {
                    "id": 1,
                    "seller_id": 1,
                    "name": "Funil",
                    "welcome_text": "Olá ✨ " * 50,
                    "welcome_media_type": "photo",
                    "welcome_media_url": "https://x/p.jpg",
                    "access_link": "https://t.me/+vip",
                    "order_bump_offer_id": 2,
                    "created_at": T0,
                }
            ],
        )
        conn.execute(
            insert(Offer),
            [
                {
                    "id": i,
                    "funnel_id": 1,
                    "title": f"Plano {i}",
                    "price_cents": 990 * i,
                    "position": i,
                }
                for i in (1, 2)
            ],
        )
        conn.execute(
            insert(Downsell),
            [
                {
                    "id": 1,
                    "funnel_id": 1,
                    "position": 0,
                    "delay_minutes": 5,
                    "price_cents": 490,
                    "text": "desconto",
                }
            ],
        )
        conn.execute(
            insert(Bot),
            [
                {
                    "id": i,
                    "seller_id": i,
                    "funnel_id": 1 if i == 1 else None,
                    "token": f"{i}:T",
                    "username": f"bot{i}",
                    "webhook_secret": "s",
                    "active": i == 1,
                    "status": "ok",
                    "created_at": T0,
                }
                for i in (1, 2)
            ],
        )
        conn.execute(
            insert(RedirectPool),
            [{"id": 1, "seller_id": 1, "slug": "promo", "strategy": "weighted", "created_at": T0}],
        )
        conn.execute(
            insert(PoolBot),
            [{"id": i, "pool_id": 1, "bot_id": i, "weight": i} for i in (1, 2)],
        )
        conn.execute(
            insert(Click),
            [
                {
                    "id": i,
                    "pool_id": 1,
                    "bot_id": 1 + i % 2,
                    "token": f"{i:032x}",
                    "utm_source": "fb" if i % 3 else None,
                    "utm_campaign": f"camp{i % 7}",
                    "fbclid": "IwAR" + "x" * 40,
                    "ip": "2001:db8::1" if i % 2 else "10.0.0.1",
                    "user_agent": "Mozilla/5.0",
                    "created_at": T0 + timedelta(seconds=i),
                }
                for i in range(1, N_CLICKS + 1)
            ],
        )
        conn.execute(
            insert(Lead),
            [
                {
                    "id": i,
                    "bot_id": 1 + i % 2,
                    "telegram_user_id": BIG + i,
                    "chat_id": BIG + i,
                    "first_name": "José" if i % 2 else None,
                    "username": f"u{i}",
                    "click_token": f"{i:032x}",
                    "utm_source": "fb",
                    "blocked": i % 5 == 0,
                    "paid": i % 3 == 0,
                    "funnel_generation": 2**40 + i,
                    "last_start_at": T0 + timedelta(minutes=i) if i % 2 else None,
                    "created_at": T0,
                }
                for i in range(1, N_LEADS + 1)
            ],
        )
        conn.execute(
            insert(InboundUpdate),
            [
                {
                    "id": i,
                    "bot_id": 1,
                    "update_id": BIG * 3 + i,
                    "kind": "message",
                    "received_at": T0,
                    "processed_at": T0 if i % 2 else None,
                }
                for i in range(1, 301)
            ],
        )
        conn.execute(
            insert(OutboundMessage),
            [
                {
                    "id": i,
                    "bot_id": 1,
                    "chat_id": BIG + i,
                    "idempotency_key": f"k{i}",
                    "method": "sendMessage",
                    "payload": {
                        "text": f"Olá {i} 🚀",
                        "reply_markup": {
                            "inline_keyboard": [[{"text": "Comprar", "callback_data": f"buy:{i}"}]]
                        },
                        "n": i,
                        "ok": True,
                    },
                    "status": "sent",
                    "attempts": 1,
                    "telegram_message_id": BIG + 7 * i,
                    "created_at": T0,
                    "sent_at": T0 + timedelta(seconds=1),
                }
                for i in range(1, N_MESSAGES + 1)
            ],
        )
        conn.execute(
            insert(Payment),
            [
                {
                    "id": i,
                    "seller_id": 1,
                    "bot_id": 1,
                    "lead_id": i,
                    "offer_id": 1 if i % 2 else None,
                    "downsell_position": None if i % 2 else 0,
                    "gateway": "sandbox",
                    "gateway_txid": f"tx{i}",
                    "amount_cents": 1990,
                    "status": "paid",
                    "pix_code": "00020126...6304ABCD",
                    "expires_at": T0 + timedelta(hours=1),
                    "paid_at": T0 + timedelta(minutes=3),
                    "delivered_at": None,
                    "created_at": T0,
                }
                for i in range(1, 51)
            ],
        )
        conn.execute(
            insert(Campaign),
            [
                {
                    "id": 1,
                    "seller_id": 1,
                    "bot_id": 1,
                    "name": "Black Friday",
                    "text": "Oferta!",
                    "media_type": None,
                    "media_url": None,
                    "buttons": [{"text": "Ver", "url": "https://x"}],
                    "audience": "unpaid",
                    "status": "running",
                    "stop_requested": True,
                    "cursor": 120,
                    "total": 400,
                    "sent": 119,
                    "failed": 1,
                    "skipped_blocked": 3,
                    "created_at": T0,
                    "started_at": T0,
                    "finished_at": None,
                }
            ],
        )
        conn.execute(
            insert(BlockedUser),
            [
                {"id": i, "bot_id": 1, "telegram_user_id": BIG + i, "blocked_at": T0}
                for i in range(1, 6)
            ],
        )
        conn.execute(
            insert(IdempotencyKey),
            [{"id": 1, "key": "api:1:funnel", "result": {"value": {"id": 1}}, "created_at": T0}],
        )
    engine.dispose()


@pytest.fixture(scope="module")
def seeded_template(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("template") / "grimbots.db"
    url = f"sqlite:///{path}"
    migrations_runner.upgrade(url)
    _seed(url)
    return path


@pytest.fixture
def sqlite_path(seeded_template, tmp_path) -> Path:
    """A private copy of the seeded database for each test."""
    path = tmp_path / "grimbots.db"
    src = sqlite3.connect(seeded_template)
    dst = sqlite3.connect(path)
    src.backup(dst)
    dst.close()
    src.close()
    return path


def _rows(url: str, model) -> list[dict]:
    engine = make_engine(url)
    try:
        with engine.connect() as conn:
            rows = conn.execute(select(model.__table__).order_by(model.id)).mappings().all()
    finally:
        engine.dispose()
    out = []
    for row in rows:
        clean = {}
        for key, value in row.items():
            if isinstance(value, datetime) and value.tzinfo is None:
                value = value.replace(tzinfo=UTC)  # SQLite hands back naive UTC
            clean[key] = value
        out.append(clean)
    return out


def _count(url: str, table: str) -> int:
    engine = make_engine(url)
    try:
        with engine.connect() as conn:
            return conn.execute(text(f"SELECT count(*) FROM {table}")).scalar_one()
    finally:
        engine.dispose()


def test_every_row_is_copied_typed_and_sequences_are_reset(sqlite_path, pg_url, tmp_path):
    sqlite_url = f"sqlite:///{sqlite_path}"
    report = migrate(sqlite_path, pg_url, batch_size=1000, backup_dir=tmp_path / "backups")

    by_name = {t.name: t for t in report.tables}
    assert [t.name for t in report.tables] == TABLES_IN_FK_ORDER
    for name in TABLES_IN_FK_ORDER:
        t = by_name[name]
        assert t.source_rows == _count(sqlite_url, name) > 0, name
        assert t.copied == t.source_rows == t.target_rows == t.target_ids_up_to_max, name
        assert t.already_present == 0
    assert by_name["clicks"].batches == 3
    assert by_name["outbound_messages"].batches == 3
    assert report.copied == sum(t.source_rows for t in report.tables)
    assert not report.nothing_to_copy

    # Field by field: booleans, timestamps, JSON, 64-bit Telegram ids, unicode.
    for model in (
        Seller,
        Funnel,
        Bot,
        Lead,
        InboundUpdate,
        OutboundMessage,
        Payment,
        Campaign,
        BlockedUser,
        PoolBot,
    ):
        assert _rows(pg_url, model) == _rows(sqlite_url, model), model.__tablename__
    lead = _rows(pg_url, Lead)[4]
    assert lead["blocked"] is True and lead["telegram_user_id"] == BIG + 5
    assert lead["funnel_generation"] == 2**40 + 5
    message = _rows(pg_url, OutboundMessage)[0]
    assert message["payload"]["reply_markup"]["inline_keyboard"][0][0]["callback_data"] == "buy:1"
    assert message["created_at"] == T0
    assert _rows(pg_url, Click)[-1] == _rows(sqlite_url, Click)[-1]

    # Sequences: the next row gets max(id) + 1 in every table.
    engine = make_engine(pg_url)
    with engine.begin() as conn:
        for name in TABLES_IN_FK_ORDER:
            seq = conn.execute(text("SELECT pg_get_serial_sequence(:t, 'id')"), {"t": name})
            last = conn.execute(text(f"SELECT last_value FROM {seq.scalar()}")).scalar()
            assert last == by_name[name].source_max_id == by_name[name].sequence_value, name
        new_id = conn.execute(
            insert(Click)
            .values(pool_id=1, bot_id=1, token="f" * 32, created_at=T0)
            .returning(Click.id)
        ).scalar()
        assert new_id == N_CLICKS + 1
        new_seller = conn.execute(
            insert(Seller)
            .values(name="n", email="n@x", api_token_hash="n", created_at=T0)
            .returning(Seller.id)
        ).scalar()
        assert new_seller == 3
    engine.dispose()

    # The backup is where the report says, named by its UTC timestamp, and it opens.
    backup = Path(report.backup_path)
    assert backup.parent == tmp_path / "backups"
    assert re.fullmatch(r"grimbots-\d{8}T\d{6}Z\.db", backup.name)
    with sqlite3.connect(backup) as conn:
        assert conn.execute("SELECT count(*) FROM clicks").fetchone()[0] == N_CLICKS
        assert conn.execute("PRAGMA integrity_check").fetchone()[0] == "ok"


def test_second_run_copies_nothing_and_says_so(sqlite_path, pg_url):
    migrate(sqlite_path, pg_url)
    second = migrate(sqlite_path, pg_url)
    assert second.nothing_to_copy
    assert second.copied == 0
    assert "nothing to copy" in second.message
    for t in second.tables:
        assert t.already_present == t.source_rows == t.target_rows
    assert _count(pg_url, "clicks") == N_CLICKS
    data = second.as_dict()
    assert data["nothing_to_copy"] is True and data["copied"] == 0
    json.dumps(data)  # the CLI prints it


def test_backup_goes_next_to_the_database_by_default(sqlite_path, pg_url):
    report = migrate(sqlite_path, pg_url)
    assert Path(report.backup_path).parent == sqlite_path.parent
    assert Path(report.backup_path).exists()


def test_interrupted_run_resumes_without_duplicates(sqlite_path, pg_url, monkeypatch):
    class Interrupted(Exception):
        pass

    def crash_after_two_click_batches(table, batch_number, inserted):
        if table == "clicks" and batch_number == 2:
            raise Interrupted

    monkeypatch.setattr(migrate_sqlite, "_after_batch", crash_after_two_click_batches)
    with pytest.raises(Interrupted):
        migrate(sqlite_path, pg_url, batch_size=1000)
    assert _count(pg_url, "clicks") == 2000
    assert _count(pg_url, "leads") == 0  # later tables not reached

    monkeypatch.undo()
    report = migrate(sqlite_path, pg_url, batch_size=1000)
    clicks = next(t for t in report.tables if t.name == "clicks")
    assert clicks.already_present == 2000
    assert clicks.copied == N_CLICKS - 2000
    assert _count(pg_url, "clicks") == N_CLICKS
    engine = make_engine(pg_url)
    with engine.connect() as conn:
        assert conn.execute(text("SELECT count(DISTINCT token) FROM clicks")).scalar() == N_CLICKS
    engine.dispose()


def test_uncheckpointed_wal_rows_are_in_the_backup_and_copied(sqlite_path, pg_url):
    writer = sqlite3.connect(sqlite_path)
    writer.execute("PRAGMA journal_mode=WAL")
    writer.execute("PRAGMA wal_autocheckpoint=0")
    writer.execute(
        "INSERT INTO blocked_users (id, bot_id, telegram_user_id, blocked_at) "
        "VALUES (99, 2, 42, '2025-03-01 12:00:00.000000')"
    )
    writer.commit()
    try:
        assert Path(f"{sqlite_path}-wal").stat().st_size > 0
        report = migrate(sqlite_path, pg_url)
    finally:
        writer.close()
    blocked = next(t for t in report.tables if t.name == "blocked_users")
    assert blocked.source_rows == 6 and blocked.source_max_id == 99
    with sqlite3.connect(report.backup_path) as conn:
        assert conn.execute("SELECT bot_id FROM blocked_users WHERE id = 99").fetchone() == (2,)


def test_a_different_row_under_another_unique_key_is_refused(sqlite_path, pg_url):
    migrations_runner.upgrade(pg_url)
    engine = make_engine(pg_url)
    with engine.begin() as conn:  # the app wrote to PostgreSQL before the move: a clash
        conn.execute(
            insert(Seller).values(
                id=50, name="x", email="s1@x.br", api_token_hash="y", created_at=T0
            )
        )
    engine.dispose()
    with pytest.raises(MigrationError, match="sellers: rows with ids 1..2 conflict"):
        migrate(sqlite_path, pg_url)


def test_text_with_nul_bytes_is_copied_without_them_and_counted_not_quoted(
    sqlite_path, pg_url, caplog
):
    secret = "s3cr3t-user-text"
    with sqlite3.connect(sqlite_path) as conn:  # phase 1 stored what /go was given
        conn.execute("UPDATE clicks SET utm_source = 'fb' || char(0) || 'ads' WHERE id = 1")
        conn.execute("UPDATE clicks SET fbclid = char(0) WHERE id = 2")
        conn.execute(
            "UPDATE leads SET first_name = ? || char(0), utm_term = char(0, 0) || 'x' WHERE id = 3",
            (secret,),
        )
    with caplog.at_level("DEBUG", logger="grimbots.migrate_sqlite"):
        report = migrate(sqlite_path, pg_url)
    by_name = {t.name: t for t in report.tables}
    assert by_name["clicks"].nul_cleaned == 2 and by_name["leads"].nul_cleaned == 2
    assert report.nul_cleaned == 4 and report.as_dict()["nul_cleaned"] == 4
    assert all(t.copied == t.source_rows for t in report.tables)
    clicks = {row["id"]: row for row in _rows(pg_url, Click)}
    assert clicks[1]["utm_source"] == "fbads" and clicks[2]["fbclid"] == ""
    lead = next(row for row in _rows(pg_url, Lead) if row["id"] == 3)
    assert (lead["first_name"], lead["utm_term"]) == (secret, "x")
    assert secret not in caplog.text and "fbads" not in caplog.text
    assert secret not in json.dumps(report.as_dict())
    assert migrate(sqlite_path, pg_url).nothing_to_copy  # a second run still passes


# --- bad input -----------------------------------------------------------------------------


def test_an_unconvertible_value_is_named_by_table_column_and_id_never_quoted(sqlite_path, pg_url):
    with sqlite3.connect(sqlite_path) as conn:
        conn.execute("UPDATE bots SET active = 'secret-cell-value' WHERE id = 2")
    with pytest.raises(MigrationError, match="bots id 2: cannot convert column active") as err:
        migrate(sqlite_path, pg_url)
    shown = "".join(traceback.format_exception(err.value))
    assert "secret-cell-value" not in shown


def test_missing_file_is_refused(tmp_path, pg_url):
    with pytest.raises(MigrationError, match="SQLite database not found"):
        migrate(tmp_path / "nope.db", pg_url)


def test_non_sqlite_file_is_refused(tmp_path, pg_url):
    bogus = tmp_path / "notes.db"
    bogus.write_text("this is not a database\n" * 10)
    with pytest.raises(MigrationError, match="not a SQLite database"):
        migrate(bogus, pg_url)
    assert list(tmp_path.glob("grimbots-*.db")) == []  # refused before any backup


def test_sqlite_schema_not_at_head_is_refused(tmp_path, pg_url):
    path = tmp_path / "old.db"
    engine = make_engine(f"sqlite:///{path}")
    Base.metadata.create_all(engine)  # tables, but never migrated
    engine.dispose()
    with pytest.raises(MigrationError, match="not at head .*grimbots db upgrade"):
        migrate(path, pg_url)


def test_bad_and_unreachable_postgres_urls_are_refused(sqlite_path):
    with pytest.raises(MigrationError, match="not a PostgreSQL URL"):
        migrate(sqlite_path, "mysql://u:p@localhost/db")
    with pytest.raises(MigrationError, match="cannot connect to PostgreSQL") as err:
        migrate(sqlite_path, "postgresql://grimbots:secret-pw@127.0.0.1:1/grimbots")
    assert "secret-pw" not in str(err.value)
    assert list(sqlite_path.parent.glob("grimbots-*.db")) == []


def test_cli_prints_the_report_and_fails_clearly_on_bad_input(sqlite_path, pg_url, tmp_path):
    runner = CliRunner()
    ok = runner.invoke(main, ["migrate-sqlite", "--sqlite", str(sqlite_path), "--postgres", pg_url])
    assert ok.exit_code == 0, ok.output
    assert json.loads(ok.output)["copied"] > 0
    again = runner.invoke(
        main, ["migrate-sqlite", "--sqlite", str(sqlite_path), "--postgres", pg_url]
    )
    assert again.exit_code == 0 and json.loads(again.output)["nothing_to_copy"] is True

    missing = runner.invoke(
        main, ["migrate-sqlite", "--sqlite", str(tmp_path / "x.db"), "--postgres", pg_url]
    )
    assert missing.exit_code != 0
    assert "SQLite database not found" in missing.output
    bad_url = runner.invoke(
        main, ["migrate-sqlite", "--sqlite", str(sqlite_path), "--postgres", "nonsense"]
    )
    assert bad_url.exit_code != 0
    assert "not a PostgreSQL URL" in bad_url.output
