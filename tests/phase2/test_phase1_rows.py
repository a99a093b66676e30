"""Phase 2 on the lab: every row the phase-1 app wrote to SQLite is in PostgreSQL afterwards.

The snapshot (lab/.state/phase1-snapshot.json) is taken by phase1_snapshot.py before phase 2 runs:
rows created through the running phase-1 app (a /start, an offer tap, its PIX charge) and the ids
of every SQLite table.
"""

import json

import pytest

import grimbots_lab as lab2


@pytest.fixture(scope="module")
def snapshot() -> dict:
    assert lab2.SNAPSHOT.exists(), (
        f"{lab2.SNAPSHOT} is missing: run tests/phase2/phase1_snapshot.py before phase 2"
    )
    return json.loads(lab2.SNAPSHOT.read_text())


def test_every_phase1_id_of_every_table_is_in_postgresql(app1, snapshot):
    missing = {}
    for table, ids in snapshot["tables"].items():
        if not ids:
            continue
        present = {
            r[0] for r in lab2.pg_rows(app1, f"SELECT id FROM {table} WHERE id <= {max(ids)}")
        }
        lost = sorted(set(ids) - present)
        if lost:
            missing[table] = lost[:20]
    assert not missing, missing


def test_the_lead_payment_and_messages_made_through_the_phase1_app_survived(app1, snapshot):
    created = snapshot["created"]
    lead = lab2.pg_rows(app1, f"SELECT id, chat_id FROM leads WHERE id = {created['lead_id']}")
    assert lead == [[created["lead_id"], created["chat_id"]]]
    payments = lab2.pg_rows(
        app1, f"SELECT id FROM payments WHERE lead_id = {created['lead_id']} ORDER BY id"
    )
    assert [p[0] for p in payments][: len(created["payment_ids"])] == created["payment_ids"]
    messages = lab2.pg_rows(
        app1, f"SELECT id FROM outbound_messages WHERE chat_id = {created['chat_id']} ORDER BY id"
    )
    assert set(created["outbound_message_ids"]) <= {m[0] for m in messages}
    assert created["outbound_message_ids"], "the phase-1 app sent no message to snapshot"


def test_sequences_continue_after_the_copied_ids(app1, snapshot):
    for table in ("leads", "payments", "outbound_messages"):
        ids = snapshot["tables"].get(table) or [0]
        (value,) = lab2.pg_rows(app1, f"SELECT last_value FROM {table}_id_seq")[0]
        assert value >= max(ids), table
