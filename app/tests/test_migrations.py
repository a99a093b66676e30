"""The packaged Alembic migrations build exactly the schema of the models, on both backends."""

from __future__ import annotations

import pytest
from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from click.testing import CliRunner
from conftest import PG_URL
from sqlalchemy import inspect, text
from sqlalchemy.engine import make_url

from grimbots import migrations_runner
from grimbots.cli import main
from grimbots.db import make_engine
from grimbots.models import Base

# Named after the test database, so engineers running the suite at once (each with their own
# GRIMBOTS_TEST_PG_URL) do not drop each other's copy.
PG_DB = f"{make_url(PG_URL).database}_migrate"


def fresh_pg_database(name: str) -> str:
    """Drop and create a database of our own: never collides with tests on grimbots_test."""
    admin = make_engine(make_url(PG_URL).set(database="postgres").render_as_string(False))
    try:
        with admin.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
            conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
            conn.execute(text(f'CREATE DATABASE "{name}"'))
    finally:
        admin.dispose()
    return make_url(PG_URL).set(database=name).render_as_string(False)


def drop_pg_database(name: str) -> None:
    admin = make_engine(make_url(PG_URL).set(database="postgres").render_as_string(False))
    try:
        with admin.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
            conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
    finally:
        admin.dispose()


@pytest.fixture(params=["sqlite", "postgres"])
def empty_url(request, tmp_path):
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'migrate.db'}"
        return
    yield fresh_pg_database(PG_DB)
    drop_pg_database(PG_DB)


def schema_differences(url: str) -> list:
    engine = make_engine(url)
    try:
        with engine.connect() as conn:
            ctx = MigrationContext.configure(conn, opts={"compare_type": True})
            return compare_metadata(ctx, Base.metadata)
    finally:
        engine.dispose()


def test_migrated_schema_equals_the_models(empty_url):
    assert migrations_runner.current(empty_url) is None
    assert migrations_runner.upgrade(empty_url) is True
    assert migrations_runner.current(empty_url) == migrations_runner.head_revision()
    assert schema_differences(empty_url) == []


def test_second_upgrade_is_a_no_op(empty_url):
    assert migrations_runner.upgrade(empty_url) is True
    engine = make_engine(empty_url)
    with engine.begin() as conn:
        conn.execute(
            text(
                "INSERT INTO sellers (name, email, api_token_hash, created_at) "
                "VALUES ('a', 'a@x', 'h', CURRENT_TIMESTAMP)"
            )
        )
    engine.dispose()
    assert migrations_runner.upgrade(empty_url) is False
    engine = make_engine(empty_url)
    with engine.connect() as conn:
        assert conn.execute(text("SELECT count(*) FROM sellers")).scalar() == 1
    engine.dispose()


def test_downgrade_to_base_and_up_again(empty_url):
    migrations_runner.upgrade(empty_url)
    engine = make_engine(empty_url)
    with engine.connect() as conn:
        command.downgrade(migrations_runner.alembic_config(conn), "base")
        conn.commit()
        assert set(inspect(conn).get_table_names()) <= {"alembic_version"}
    engine.dispose()
    assert migrations_runner.upgrade(empty_url) is True
    assert schema_differences(empty_url) == []


def test_upgrade_works_through_a_libpq_multi_host_url():
    url = fresh_pg_database(PG_DB)
    try:
        parsed = make_url(url)
        multi = (
            f"postgresql://{parsed.username}:{parsed.password}@{parsed.host}:{parsed.port},"
            f"{parsed.host}:{parsed.port}/{PG_DB}?target_session_attrs=read-write"
        )
        assert migrations_runner.upgrade(multi) is True
        assert migrations_runner.upgrade(multi) is False
        assert migrations_runner.current(url) == migrations_runner.head_revision()
    finally:
        drop_pg_database(PG_DB)


def test_cli_db_upgrade_reports_what_it_did(tmp_path):
    url = f"sqlite:///{tmp_path / 'cli.db'}"
    runner = CliRunner()
    first = runner.invoke(main, ["db", "upgrade", "--url", url])
    assert first.exit_code == 0, first.output
    assert "migrations applied" in first.output
    second = runner.invoke(main, ["db", "upgrade", "--url", url])
    assert second.exit_code == 0, second.output
    assert "already at head" in second.output


def test_migrations_ship_inside_the_package():
    versions = migrations_runner.MIGRATIONS_DIR / "versions"
    assert (migrations_runner.MIGRATIONS_DIR / "env.py").is_file()
    assert any(p.suffix == ".py" for p in versions.iterdir())
