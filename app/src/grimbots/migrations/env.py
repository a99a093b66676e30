"""Alembic environment, configured in code (no alembic.ini) so it ships inside the wheel.

`grimbots.migrations_runner` hands over an open connection in ``config.attributes`` (so the
runner controls locking and transactions); without one, for example when a developer generates
a revision with ``alembic.command.revision(grimbots.migrations_runner.alembic_config(), ...)``,
the URL comes from ``sqlalchemy.url`` or ``GRIMBOTS_DATABASE_URL``.
"""

from __future__ import annotations

import os

from alembic import context

from grimbots.db import make_engine
from grimbots.models import Base

config = context.config
target_metadata = Base.metadata


def _configure(connection) -> None:
    context.configure(
        connection=connection,
        target_metadata=target_metadata,
        # SQLite cannot ALTER most things: batch mode rebuilds the table instead.
        render_as_batch=connection.dialect.name == "sqlite",
        compare_type=True,
    )


def run_migrations_online() -> None:
    connection = config.attributes.get("connection")
    if connection is not None:
        _configure(connection)
        with context.begin_transaction():
            context.run_migrations()
        return
    url = config.get_main_option("sqlalchemy.url") or os.environ.get("GRIMBOTS_DATABASE_URL")
    if not url:
        raise RuntimeError("no database URL: set GRIMBOTS_DATABASE_URL")
    engine = make_engine(url)
    try:
        with engine.connect() as conn:
            _configure(conn)
            with context.begin_transaction():
                context.run_migrations()
    finally:
        engine.dispose()


if context.is_offline_mode():
    raise RuntimeError("offline (--sql) migrations are not supported; run against a database")
run_migrations_online()
