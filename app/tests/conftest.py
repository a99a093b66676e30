"""Shared fixtures: real Redis (DB 15 on 127.0.0.1:6379), SQLite and PostgreSQL, the fake
Telegram Bot API, and a burst RQ worker that drains the queues in-process.

Every test that takes `db` runs twice: on SQLite and on PostgreSQL.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest
import redis as redis_lib
from sqlalchemy import text

from grimbots import db as db_module
from grimbots import redis_pool
from grimbots.models import Base
from grimbots.settings import Settings
from tests.figures import FIGURES
from tests.redis_servers import redis_cluster  # noqa: F401 - a fixture, shared by the Redis tests

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "tools" / "fake_telegram"))

REDIS_URL = os.environ.get("GRIMBOTS_TEST_REDIS_URL", "redis://127.0.0.1:6379/15")
PG_URL = os.environ.get(
    "GRIMBOTS_TEST_PG_URL", "postgresql://grimbots:grimbots@127.0.0.1:5432/grimbots_test"
)
GATEWAY_SECRET = "test-gateway-secret"


def pytest_terminal_summary(terminalreporter, config):
    """Print the figures suites recorded with tests.figures.report."""
    for line in config.stash.get(FIGURES, []):
        terminalreporter.write_line(line)


@pytest.fixture
def redis_client():
    client = redis_lib.Redis.from_url(REDIS_URL, decode_responses=True)
    client.flushdb()
    yield client
    client.flushdb()
    client.close()


@pytest.fixture
def fake_tg():
    from fake_telegram import FakeTelegram

    server = FakeTelegram(host="127.0.0.1", port=0)
    server.start()
    yield server
    server.stop()


def _reset_schema(url: str) -> None:
    engine = db_module.make_engine(url)
    if engine.dialect.name == "postgresql":
        with engine.begin() as conn:
            conn.execute(text("DROP SCHEMA public CASCADE"))
            conn.execute(text("CREATE SCHEMA public"))
    Base.metadata.create_all(engine)
    engine.dispose()


@pytest.fixture(params=["sqlite", "postgres"])
def database_url(request, tmp_path):
    url = f"sqlite:///{tmp_path / 'grimbots.db'}" if request.param == "sqlite" else PG_URL
    _reset_schema(url)
    return url


def make_settings(database_url: str, telegram_base: str = "http://127.0.0.1:9", **overrides):
    env = {
        "GRIMBOTS_DATABASE_URL": database_url,
        "GRIMBOTS_REDIS_URL": REDIS_URL,
        "TELEGRAM_API_BASE": telegram_base,
        # Telegram calls webhooks over https on 443 (the fake refuses anything else).
        "GRIMBOTS_PUBLIC_URL": "https://bots.example.test",
        "GRIMBOTS_GATEWAY_SECRETS": f"sandbox:{GATEWAY_SECRET}",
        "GRIMBOTS_TELEGRAM_MAX_RETRIES": "3",
        "GRIMBOTS_TELEGRAM_TIMEOUT": "2",
        "GRIMBOTS_LOG_LEVEL": "WARNING",
    }
    env.update(overrides)
    return Settings.from_env(env)


@pytest.fixture
def settings(database_url, redis_client, fake_tg):
    from grimbots import telegram, webhook

    webhook.forget_local_bot_meta()
    s = make_settings(database_url, fake_tg.base_url)
    db_module.reset_db()
    redis_pool.reset_pools()
    telegram.reset_client()
    db_module.get_db(s)
    redis_pool.get_pools(s)
    telegram.get_client(s)
    yield s
    db_module.reset_db()
    redis_pool.reset_pools()
    telegram.reset_client()


@pytest.fixture
def db(settings):
    return db_module.get_db()


@pytest.fixture
def app(settings):
    from grimbots.app import create_app

    application = create_app(settings)
    application.testing = True
    return application


@pytest.fixture
def client(app):
    return app.test_client()


@pytest.fixture
def drain(settings):
    """Run every queued job (and every job they enqueue) in this process, like a worker."""
    from grimbots.worker import drain_queues

    return drain_queues
