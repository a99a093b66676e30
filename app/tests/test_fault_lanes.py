"""Two fault runs on one database server (two CI jobs, a developer and CI) never share a lane's
schemas, files or Redis; what a crashed run left behind neither blocks nor breaks the next run,
which drops it."""

from __future__ import annotations

import threading

import pytest
from faults import lane as lane_module
from faults.lane import Lane, RedisServer, RunSchemas, new_run_id
from sqlalchemy import create_engine, text
from sqlalchemy.pool import NullPool

from grimbots import db as db_module

REDIS_URL = "redis://127.0.0.1:1/0"  # never connected to here


def _admin():
    return create_engine(db_module.normalize_database_url(lane_module.PG_URL), poolclass=NullPool)


def _schemas(like: str) -> set[str]:
    engine = _admin()
    with engine.connect() as conn:
        names = conn.execute(
            text("SELECT nspname FROM pg_namespace WHERE nspname LIKE :p"), {"p": like}
        )
        found = {row[0] for row in names}
    engine.dispose()
    return found


def test_two_runs_give_the_same_lane_distinct_schemas_and_files():
    first, second = new_run_id(), new_run_id()
    assert first != second
    a, b = Lane(0, REDIS_URL, first), Lane(0, REDIS_URL, second)
    try:
        assert set(a.pg_schemas).isdisjoint(b.pg_schemas)
        for backend in ("postgres", "sqlite"):
            assert set(a.database_urls(backend)).isdisjoint(b.database_urls(backend))
    finally:
        a.drop()
        b.drop()


def test_a_crashed_runs_locked_schemas_neither_block_nor_break_a_new_run():
    """A crashed run whose lane process lingers, still in a transaction on its tables: the new
    run's lane with the same number prepares at once, and the leftover is dropped later."""
    crashed = Lane(0, REDIS_URL, new_run_id())
    crashed.prepare()
    leftover = _admin().connect()
    leftover.execute(text(f'SELECT count(*) FROM "{crashed.pg_schema}".leads'))  # holds a lock
    new = Lane(0, REDIS_URL, new_run_id())
    done = threading.Event()
    try:
        with RunSchemas(new.run_id) as run:
            assert crashed.pg_schema not in run.sweep_stale()  # locked: skipped, not waited on

            def prepare() -> None:
                new.prepare()
                done.set()

            threading.Thread(target=prepare, daemon=True).start()
            assert done.wait(30), "the new run's lane waited on the crashed run's schema"
            engine = db_module.make_engine(new.database_urls("postgres")[0])
            with engine.connect() as conn:
                assert conn.execute(text("SELECT count(*) FROM leads")).scalar() == 0
            engine.dispose()
    finally:
        leftover.rollback()
        leftover.close()
        done.wait(30)
        crashed.drop()
        new.drop()


def test_the_next_run_drops_a_crashed_runs_schemas_but_not_a_live_runs():
    crashed, live = Lane(0, REDIS_URL, new_run_id()), Lane(1, REDIS_URL, new_run_id())
    with RunSchemas(live.run_id):
        crashed.prepare()  # its run's lock is gone: it crashed
        live.prepare()
        with RunSchemas(new_run_id()) as run:
            dropped = run.sweep_stale()
        assert set(crashed.pg_schemas) <= set(dropped)
        assert set(live.pg_schemas) <= _schemas("faults\\_r%")
    # A run's end drops its own schemas, a lane's the lane never dropped included.
    assert not set(live.pg_schemas) & _schemas("faults\\_r%")
    crashed.drop()
    live.drop()


def test_a_redis_port_another_run_took_is_not_shared(monkeypatch):
    first = RedisServer()
    try:
        # The probe found the port free, then the other run bound it (a race between runs).
        monkeypatch.setattr(lane_module, "free_port", lambda start, end: first.port)
        with pytest.raises(RuntimeError, match=f"another fault run uses Redis port {first.port}"):
            RedisServer()
        assert first.server_pid() == first.proc.pid
    finally:
        first.stop()
