"""Fixtures of the phase-2 suites: the lab with every role's defaults loaded."""

from __future__ import annotations

import pytest

import grimbots_lab as lab2


@pytest.fixture(scope="session")
def lab_db():
    """The lab inventory with every role's defaults (common, app, patroni, ...)."""
    return lab2.load_lab()


@pytest.fixture(scope="session")
def db_names(lab_db) -> list[str]:
    return lab_db.groups["db"]


@pytest.fixture(scope="session")
def app1(lab_db) -> dict:
    return lab_db.hosts[lab_db.groups["app"][0]]


@pytest.fixture
def healthy_cluster(lab_db):
    """Wait (bounded) until the cluster has one leader and every member running."""

    def ready():
        state = lab2.cluster(lab_db)
        members = (state or {}).get("members", [])
        ok = (
            len(lab2.leaders(state)) == 1
            and len(members) == len(lab_db.groups["db"])
            and all(m["state"] in ("running", "streaming") for m in members)
            and any(m["role"] == "sync_standby" for m in members)
        )
        return state if ok else None

    state = lab2.wait_for(ready, timeout=120)
    assert state, f"the cluster is not healthy: {lab2.cluster(lab_db)}"
    return state
