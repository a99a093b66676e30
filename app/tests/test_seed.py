"""The demo seed creates a usable funnel once and finds it again on every later run."""

from __future__ import annotations

import json

import pytest
from click.testing import CliRunner
from sqlalchemy import func, select
from test_migrations import drop_pg_database, fresh_pg_database

from grimbots import db as db_module
from grimbots import migrations_runner
from grimbots.auth import hash_token
from grimbots.cli import main
from grimbots.db import Database
from grimbots.models import Base, Bot, Downsell, Funnel, Offer, PoolBot, RedirectPool, Seller
from grimbots.seed import DEFAULT_WEBHOOK_SECRET, seed_demo

PG_DB = "grimbots_seed_test"


@pytest.fixture(params=["sqlite", "postgres"])
def seed_url(request, tmp_path, monkeypatch):
    monkeypatch.delenv("GRIMBOTS_DEMO_API_TOKEN", raising=False)
    monkeypatch.delenv("GRIMBOTS_DEMO_WEBHOOK_SECRET", raising=False)
    if request.param == "sqlite":
        url = f"sqlite:///{tmp_path / 'seed.db'}"
        migrations_runner.upgrade(url)
        yield url
        return
    url = fresh_pg_database(PG_DB)
    migrations_runner.upgrade(url)
    yield url
    drop_pg_database(PG_DB)


@pytest.fixture
def database(seed_url):
    database = Database(seed_url)
    yield database
    database.dispose()


def _counts(database: Database) -> dict[str, int]:
    with database.session() as session:
        return {
            table.name: session.execute(select(func.count()).select_from(table)).scalar_one()
            for table in Base.metadata.sorted_tables
        }


def test_first_run_builds_the_demo_funnel(database):
    result = seed_demo(database)
    assert result["bot_username"] == "demo_sales_bot"
    assert result["webhook_secret"] == DEFAULT_WEBHOOK_SECRET
    assert result["pool_slug"] == "demo"
    assert result["api_token"]
    with database.session() as session:
        seller = session.get(Seller, result["seller_id"])
        assert seller.api_token_hash == hash_token(result["api_token"])
        funnel = session.get(Funnel, result["funnel_id"])
        assert funnel.seller_id == seller.id
        assert funnel.welcome_media_type == "photo" and funnel.welcome_text
        assert funnel.access_link.startswith("https://")
        offers = session.execute(select(Offer).order_by(Offer.position)).scalars().all()
        assert [o.id for o in offers] == result["offer_ids"]
        assert all(isinstance(o.price_cents, int) and o.price_cents > 0 for o in offers)
        delays = session.execute(select(Downsell.delay_minutes).order_by(Downsell.position))
        assert list(delays.scalars()) == [5, 15]
        bot = session.get(Bot, result["bot_id"])
        assert bot.token == "123456:DEMO-TOKEN" and bot.active and bot.funnel_id == funnel.id
        pool = session.execute(select(RedirectPool).where(RedirectPool.slug == "demo")).scalar_one()
        members = session.execute(select(PoolBot.bot_id).where(PoolBot.pool_id == pool.id))
        assert list(members.scalars()) == [bot.id]


def test_second_run_finds_the_same_objects_and_creates_nothing(database):
    first = seed_demo(database)
    counts = _counts(database)
    second = seed_demo(database)
    assert second["api_token"] is None
    assert {k: v for k, v in second.items() if k != "api_token"} == {
        k: v for k, v in first.items() if k != "api_token"
    }
    assert _counts(database) == counts
    with database.session() as session:  # the first token still works
        seller = session.get(Seller, first["seller_id"])
        assert seller.api_token_hash == hash_token(first["api_token"])


def test_secrets_come_from_the_environment_when_set(database, monkeypatch):
    monkeypatch.setenv("GRIMBOTS_DEMO_API_TOKEN", "lab-token-123")
    monkeypatch.setenv("GRIMBOTS_DEMO_WEBHOOK_SECRET", "lab-secret")
    result = seed_demo(database)
    assert result["api_token"] == "lab-token-123"
    assert result["webhook_secret"] == "lab-secret"
    assert seed_demo(database)["api_token"] is None  # same token: nothing re-issued
    with database.session() as session:
        assert session.get(Seller, result["seller_id"]).api_token_hash == hash_token(
            "lab-token-123"
        )
        assert session.get(Bot, result["bot_id"]).webhook_secret == "lab-secret"


def test_a_changed_environment_secret_replaces_the_stored_one(database, monkeypatch):
    first = seed_demo(database)
    monkeypatch.setenv("GRIMBOTS_DEMO_WEBHOOK_SECRET", "rotated")
    monkeypatch.setenv("GRIMBOTS_DEMO_API_TOKEN", "rotated-token")
    second = seed_demo(database)
    assert second["bot_id"] == first["bot_id"]
    assert second["webhook_secret"] == "rotated"
    assert second["api_token"] == "rotated-token"


def test_cli_seed_demo_prints_json(seed_url, monkeypatch):
    monkeypatch.setenv("GRIMBOTS_DATABASE_URL", seed_url)
    db_module.reset_db()
    try:
        runner = CliRunner()
        first = runner.invoke(main, ["seed-demo"])
        assert first.exit_code == 0, first.output
        data = json.loads(first.output)
        assert data["pool_slug"] == "demo" and data["api_token"]
        second = json.loads(runner.invoke(main, ["seed-demo"]).output)
        assert second["bot_id"] == data["bot_id"] and second["api_token"] is None
    finally:
        db_module.reset_db()
