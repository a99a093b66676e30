"""The `grimbots` command: real processes, as systemd runs them."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
import requests
from click.testing import CliRunner

from grimbots.cli import main
from grimbots.queues import lanes_for
from tests.conftest import REDIS_URL
from tests.factories import make_bot, make_seller

BIN = Path(sys.executable).parent / "grimbots"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _env(database_url: str, **extra) -> dict:
    return {
        **os.environ,
        "GRIMBOTS_DATABASE_URL": database_url,
        "GRIMBOTS_REDIS_URL": REDIS_URL,
        "TELEGRAM_API_BASE": "http://127.0.0.1:9",
        "GRIMBOTS_WEB_WORKERS": "2",
        **extra,
    }


def test_worker_lanes_cover_every_queue_with_the_default_worker_set():
    covered = set(lanes_for(["tasks"])) | set(lanes_for(["gateway"])) | set(lanes_for(["webhook"]))
    assert covered == {"tasks", "gateway", "webhook", "tracking", "marathon"}
    assert lanes_for(["tasks"])[0] == "tasks"


def test_worker_refuses_an_unknown_queue_such_as_an_instance_name(tmp_path):
    result = CliRunner().invoke(main, ["worker", "tasks-1"], env={"GRIMBOTS_REDIS_URL": REDIS_URL})
    assert result.exit_code != 0
    assert "unknown queue 'tasks-1'" in result.output


def test_bad_configuration_is_a_clear_error():
    result = CliRunner().invoke(main, ["web"], env={"GRIMBOTS_REDIS_MAX_CONNECTIONS": "many"})
    assert result.exit_code != 0
    assert "GRIMBOTS_REDIS_MAX_CONNECTIONS must be an integer" in result.output


@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
def test_web_serves_reloads_on_sighup_and_stops_on_sigterm(database_url, redis_client):
    port = _free_port()
    env = _env(database_url, GRIMBOTS_WEB_BIND=f"127.0.0.1:{port}")
    proc = subprocess.Popen(
        [str(BIN), "web"], env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE
    )
    try:
        url = f"http://127.0.0.1:{port}/health"
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            try:
                resp = requests.get(url, timeout=5)
                break
            except requests.ConnectionError:
                time.sleep(0.2)
        else:
            pytest.fail("grimbots web did not start")
        assert resp.status_code == 503 and resp.json()["checks"]["database"]["ok"]
        proc.send_signal(signal.SIGHUP)
        # New workers replace the old ones; the listening socket never closes.
        answered = None
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline and answered is None:
            try:
                answered = requests.get(url, timeout=5).json()
            except requests.RequestException:
                time.sleep(0.5)
        assert answered is not None and answered["checks"]["redis"]["ok"]
        assert proc.poll() is None
    finally:
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=30) == 0


@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
def test_burst_worker_runs_queued_jobs_and_exits(database_url, redis_client):
    import redis as redis_lib
    from rq import Queue

    conn = redis_lib.Redis.from_url(REDIS_URL)
    Queue("tracking", connection=conn).enqueue("grimbots.jobs.record_click", {"token": "t" * 32})
    done = subprocess.run(
        [str(BIN), "worker", "tasks", "--burst"],
        env=_env(database_url),
        capture_output=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    assert Queue("tracking", connection=conn).count == 0


@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
def test_sandbox_pay_of_an_unknown_charge_is_a_clear_error(database_url, redis_client):
    result = CliRunner().invoke(
        main,
        ["sandbox-pay", "nosuchtxid", "--url", "http://127.0.0.1:9"],
        env={
            "GRIMBOTS_DATABASE_URL": database_url,
            "GRIMBOTS_REDIS_URL": REDIS_URL,
            "GRIMBOTS_GATEWAY_SECRETS": "sandbox:s",
        },
    )
    assert result.exit_code == 1
    assert "no sandbox charge with txid nosuchtxid" in result.output


@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
def test_set_webhooks_check_reports_a_failure_without_the_token(db, fake_tg):
    """Telegram unreachable over TLS: requests' error quotes the URL, which holds the token."""
    with db.session() as session:
        seller, _ = make_seller(session)
        bot = make_bot(session, seller)
        bot_id, secret = bot.id, bot.token.split(":")[1]
    done = subprocess.run(
        [str(BIN), "set-webhooks", "--check"],
        env=_env(db.url, TELEGRAM_API_BASE=fake_tg.base_url.replace("http:", "https:")),
        capture_output=True,
        timeout=60,
    )
    assert secret.encode() not in done.stdout + done.stderr
    assert b"Traceback" not in done.stderr
    assert done.returncode == 1, done.stderr[-2000:]
    [due] = json.loads(done.stdout)
    assert due["bot_id"] == bot_id and "SSLError" in due["error"]
