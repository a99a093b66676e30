"""Before phase 2: create rows through the running phase-1 app and snapshot every id in SQLite.

    python tests/phase2/phase1_snapshot.py      (scripts/test-lab.sh runs it before phase 2)

Through the app, as Telegram would: a /start to the demo bot's webhook (a lead, an inbound update,
the welcome in the outbox), then a tap on the first offer (a PIX charge: a payment row and its
message). Then the ids of every table of the SQLite file go to lab/.state/phase1-snapshot.json;
tests/phase2/test_phase1_rows.py checks each is in PostgreSQL after phase 2. When the app already
runs on PostgreSQL (phase 2 ran before), the existing snapshot is kept.
"""

from __future__ import annotations

import json
import random
import sys
import time
import urllib.request

from grimbots_lab import APP_CLI, PG_ENV, SNAPSHOT, load_lab, port, ssh, wait_for

SQLITE_IDS = """
import json, sqlite3, sys
db = sqlite3.connect(f"file:{sys.argv[1]}?mode=ro", uri=True)
out = {}
for (table,) in db.execute("SELECT name FROM sqlite_master WHERE type='table'"):
    columns = [c[1] for c in db.execute(f'PRAGMA table_info("{table}")')]
    if "id" in columns:
        out[table] = [r[0] for r in db.execute(f'SELECT id FROM "{table}" ORDER BY id')]
print(json.dumps(out))
"""


def post(url: str, body: dict, headers: dict) -> int:
    req = urllib.request.Request(
        url, json.dumps(body).encode(), {"Content-Type": "application/json", **headers}
    )
    with urllib.request.urlopen(req, timeout=10) as resp:  # noqa: S310 - lab URLs only
        return resp.status


def calls(telegram: str, chat_id: int) -> list[dict]:
    with urllib.request.urlopen(f"{telegram}/_calls?chat_id={chat_id}", timeout=10) as resp:  # noqa: S310
        return [c for c in json.loads(resp.read()) if c["ok"]]


def callbacks(call: dict) -> list[str]:
    markup = call.get("reply_markup") or {}
    if isinstance(markup, str):
        markup = json.loads(markup)
    return [b["callback_data"] for row in markup.get("inline_keyboard", []) for b in row]


def sqlite_ids(app: dict, sql: str) -> list[int]:
    """Ids a query returns from the app host's SQLite file (read with the sqlite3 shell)."""
    run = ssh(app, f"sqlite3 {app['grimbots_sqlite_path']} '{sql}'")
    assert run.returncode == 0, run.stderr
    return [int(x) for x in run.stdout.split()]


def main() -> int:
    lab = load_lab()
    app = lab.hosts[lab.groups["app"][0]]
    env = ssh(app, f"cat {PG_ENV} 2>/dev/null || true").stdout
    if "GRIMBOTS_DATABASE_URL=postgres" in env:
        print(f"the app already runs on PostgreSQL: keeping {SNAPSHOT}")
        return 0 if SNAPSHOT.exists() else 1
    seeded = ssh(app, f"{APP_CLI} seed-demo")
    assert seeded.returncode == 0, seeded.stderr
    demo = json.loads(seeded.stdout[seeded.stdout.index("{") :])
    base = f"http://{app['ansible_host']}:{app['grimbots_web_port']}"
    hook = f"{base}/webhook/telegram/{demo['bot_id']}"
    headers = {"X-Telegram-Bot-Api-Secret-Token": demo["webhook_secret"]}
    telegram = (
        f"http://{lab.hosts[lab.groups['telegram'][0]]['ansible_host']}:{port('fake_telegram')}"
    )
    chat_id = random.randint(10**9, 2 * 10**9)
    user = {"id": chat_id, "is_bot": False, "first_name": "Snapshot"}
    chat = {"id": chat_id, "type": "private", "first_name": "Snapshot"}
    update_id = random.randint(10**6, 10**9)
    start = {
        "update_id": update_id,
        "message": {
            "message_id": 1,
            "date": int(time.time()),
            "chat": chat,
            "from": user,
            "text": "/start",
        },
    }
    assert post(hook, start, headers) == 200
    welcome = wait_for(lambda: [c for c in calls(telegram, chat_id) if callbacks(c)], 60)
    assert welcome, "no welcome with offer buttons reached the fake Telegram API"
    offer = next(d for d in callbacks(welcome[0]) if d.startswith("buy:"))
    sent_before = len(calls(telegram, chat_id))

    def tap(data: str, n: int) -> None:
        body = {
            "update_id": update_id + n,
            "callback_query": {
                "id": f"snapshot-{update_id}-{n}",
                "from": user,
                "chat_instance": "1",
                "message": {"message_id": 2, "date": int(time.time()), "chat": chat},
                "data": data,
            },
        }
        assert post(hook, body, headers) == 200

    tap(offer, 1)
    reply = wait_for(lambda: calls(telegram, chat_id)[sent_before:], 60)
    bump = [
        d for c in reply or [] for d in callbacks(c) if d.startswith("bump:") and d.endswith(":0")
    ]
    if bump:  # the funnel proposed an order bump first: decline it, the charge follows
        sent_before = len(calls(telegram, chat_id))
        tap(bump[0], 2)
        wait_for(lambda: calls(telegram, chat_id)[sent_before:], 60)

    def ids() -> dict:
        run = ssh(app, f"python3 - {app['grimbots_sqlite_path']}", stdin=SQLITE_IDS)
        assert run.returncode == 0, run.stderr
        return json.loads(run.stdout)

    lead_id = sqlite_ids(app, f"SELECT id FROM leads WHERE chat_id={chat_id}")[0]
    payment = wait_for(
        lambda: sqlite_ids(app, f"SELECT id FROM payments WHERE lead_id={lead_id}"), 60
    )
    assert payment, f"no payment row for lead {lead_id} after the offer tap"
    messages = sqlite_ids(app, f"SELECT id FROM outbound_messages WHERE chat_id={chat_id}")
    snapshot = {
        "created": {
            "chat_id": chat_id,
            "lead_id": lead_id,
            "payment_ids": payment,
            "outbound_message_ids": messages,
        },
        "tables": ids(),
        "taken_at": time.time(),
    }
    SNAPSHOT.parent.mkdir(parents=True, exist_ok=True)
    SNAPSHOT.write_text(json.dumps(snapshot, indent=1))
    counts = {t: len(v) for t, v in snapshot["tables"].items()}
    print(
        f"phase-1 snapshot: lead {lead_id}, payments {payment}, {len(messages)} outbound "
        f"messages; rows per table {counts} -> {SNAPSHOT}"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
