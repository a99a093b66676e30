"""The webhook's cached bot meta never outlives a secret rotation or a deactivation."""

from __future__ import annotations

import contextlib

import pytest
from sqlalchemy import create_engine
from sqlalchemy.orm import sessionmaker

from grimbots import db as db_module
from grimbots import webhook
from grimbots.models import Bot
from grimbots.redis_pool import bot_tag
from tests.factories import make_bot, make_funnel, make_seller, start_update

HEADER = "X-Telegram-Bot-Api-Secret-Token"


@pytest.fixture
def bot(db):
    with db.session() as session:
        seller, _ = make_seller(session)
        return make_bot(session, seller, make_funnel(session, seller))


def _post(client, bot_id: int, secret: str, update_id: int):
    return client.post(
        f"/webhook/telegram/{bot_id}", json=start_update(update_id), headers={HEADER: secret}
    )


def _change(bot_id: int, **values) -> None:
    """What the admin API does: commit the change, then invalidate the cache."""
    with db_module.get_db().session() as session:
        row = session.get(Bot, bot_id)
        for name, value in values.items():
            setattr(row, name, value)
    webhook.invalidate_bot_cache(bot_id)


def _interleave(monkeypatch, after_read) -> None:
    """Run `after_read` (the writer) right after the webhook's database lookup has read the row
    and before it fills the cache, whichever session (primary or standby) it reads from."""
    real = db_module.get_db()

    class Racing:
        def __getattr__(self, name):
            return getattr(real, name)

        @contextlib.contextmanager
        def session(self):
            with real.session() as session:
                yield session
            after_read()

        @contextlib.contextmanager
        def read_session(self):
            with real.read_session() as session:
                yield session
            after_read()

    monkeypatch.setattr(webhook, "get_db", lambda: Racing())


@pytest.mark.parametrize(
    "change",
    [{"webhook_secret": "rotated-secret"}, {"active": False}],
    ids=["rotate", "deactivate"],
)
def test_a_reader_holding_the_old_row_cannot_cache_it_after_a_change(
    client, bot, redis_client, monkeypatch, change
):
    old_secret = bot.webhook_secret
    _interleave(monkeypatch, lambda: _change(bot.id, **change))
    # The reader misses the cache, reads the old row; the writer commits and invalidates; the
    # reader fills the cache. This request still saw the old row: it may pass.
    _post(client, bot.id, old_secret, 1)
    monkeypatch.undo()
    cached = redis_client.hgetall(f"gb:{bot_tag(bot.id)}:meta")
    assert not (cached.get("secret") == old_secret and cached.get("active") == "1")
    webhook.forget_local_bot_meta()  # as another web process would see it
    after = _post(client, bot.id, old_secret, 2)
    assert after.status_code == (403 if "webhook_secret" in change else 404)


def test_the_cache_is_filled_from_the_primary_not_a_lagging_standby(client, bot, db, tmp_path):
    with db.session() as session:
        old_secret = session.get(Bot, bot.id).webhook_secret
    # A standby that has not replayed the rotation yet: a copy of the database before it.
    standby = create_engine(f"sqlite:///{tmp_path / 'standby.db'}")
    Bot.__table__.create(standby)
    with sessionmaker(standby).begin() as session:
        session.merge(Bot(**{c.name: getattr(bot, c.name) for c in Bot.__table__.columns}))
    _change(bot.id, webhook_secret="rotated-secret")
    db._read_sessions = sessionmaker(standby, expire_on_commit=False)
    try:
        assert _post(client, bot.id, old_secret, 3).status_code == 403
        assert _post(client, bot.id, "rotated-secret", 4).status_code == 200
    finally:
        db._read_sessions = None
        standby.dispose()
