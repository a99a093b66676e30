"""Phase 2 on the lab: the app runs on the cluster through the multi-host URL; the move happened
once, with a kept SQLite backup, and a new /start still works end to end."""

import json
import random
import time
import urllib.request

import grimbots_lab as lab2


def _health(app1) -> tuple[int, dict]:
    url = f"http://{app1['ansible_host']}:{app1['grimbots_web_port']}/health"
    try:
        with urllib.request.urlopen(url, timeout=10) as resp:  # noqa: S310
            return resp.status, json.loads(resp.read())
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read())


def test_health_reports_the_database_ok_on_postgresql(app1):
    status, body = _health(app1)
    assert status == 200, body
    assert body["checks"]["database"]["ok"] is True
    assert body["checks"]["database"]["backend"] == "postgresql"


def test_database_env_is_private_and_names_every_db_host_read_write(lab_db, app1):
    stat = lab2.ssh(app1, f"stat -c '%U:%G %a' {lab2.PG_ENV}").stdout.strip()
    assert stat == f"root:{app1['grimbots_user']} 640"
    env = lab2.ssh(app1, f"grep ^GRIMBOTS_DATABASE_URL= {lab2.PG_ENV}").stdout
    url = env.strip().split("=", 1)[1]
    assert url.startswith(f"postgresql://{app1['platform_database_user']}@")
    hosts = url.split("@", 1)[1].split("/", 1)[0].split(",")
    pg = lab2.port("postgresql")
    assert hosts == [f"{lab_db.hosts[n]['ansible_host']}:{pg}" for n in lab_db.groups["db"]]
    assert "target_session_attrs=read-write" in url


def test_the_move_is_not_repeated_and_the_sqlite_backup_is_kept(app1):
    check = lab2.ssh(app1, f"{lab2.LIB_DIR}/grimbots-switch-database --check")
    assert check.returncode == 0, check.stdout + check.stderr
    assert check.stdout.startswith("unchanged")
    backups = lab2.ssh(app1, f"ls {app1['grimbots_database_backup_dir']}").stdout.split()
    assert any(b.startswith("grimbots-") and b.endswith("Z.db") for b in backups), backups
    assert lab2.ssh(app1, f"test -s {app1['grimbots_sqlite_path']}").returncode == 0


def test_a_new_start_on_postgresql_creates_a_lead_and_one_welcome(lab_db, app1):
    out = lab2.ssh(app1, f"{lab2.APP_CLI} seed-demo").stdout
    demo = json.loads(out[out.index("{") :])
    chat_id = random.randint(10**9, 2 * 10**9)
    update = {
        "update_id": random.randint(10**6, 10**9),
        "message": {
            "message_id": 1,
            "date": int(time.time()),
            "chat": {"id": chat_id, "type": "private", "first_name": "Pg"},
            "from": {"id": chat_id, "is_bot": False, "first_name": "Pg"},
            "text": "/start",
        },
    }
    url = f"http://{app1['ansible_host']}:{app1['grimbots_web_port']}/webhook/telegram/{demo['bot_id']}"
    req = urllib.request.Request(
        url,
        json.dumps(update).encode(),
        {
            "Content-Type": "application/json",
            "X-Telegram-Bot-Api-Secret-Token": demo["webhook_secret"],
        },
    )
    with urllib.request.urlopen(req, timeout=10) as resp:  # noqa: S310
        assert resp.status == 200
    rows = lab2.wait_for(
        lambda: lab2.pg_rows(app1, f"SELECT id FROM leads WHERE chat_id = {chat_id}"), timeout=60
    )
    assert len(rows) == 1, rows
    telegram = f"http://{lab_db.hosts[lab_db.groups['telegram'][0]]['ansible_host']}:{lab2.port('fake_telegram')}"

    def sends():
        with urllib.request.urlopen(f"{telegram}/_calls?chat_id={chat_id}", timeout=10) as r:  # noqa: S310
            return [c for c in json.loads(r.read()) if c["ok"] and c["method"].startswith("send")]

    assert len(lab2.wait_for(sends, timeout=60)) == 1
