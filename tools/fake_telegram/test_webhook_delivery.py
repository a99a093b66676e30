"""The fake delivers updates to webhooks as Telegram does: https on Telegram's ports only, the
certificate verified against the configured CA or the bot's uploaded one, failures retried."""
# ruff: noqa: S310  (urllib against the local fake only)

from __future__ import annotations

import json
import sys
import time
import urllib.error
import urllib.request
import uuid
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))

from testpki import Webhook, make_ca, make_leaf, make_selfsigned  # noqa: E402

from fake_telegram import FakeTelegram  # noqa: E402

TOKEN = "4242:webhook-test"
URL = "https://bots.example.test/webhook/telegram/1"  # port 443, reached through connect_to


@pytest.fixture(scope="module")
def pki(tmp_path_factory):
    folder = tmp_path_factory.mktemp("pki")
    ca = make_ca(folder, "acme-root")
    (folder / "other").mkdir()
    other = make_ca(folder / "other", "other-root")
    leaf = make_leaf(folder, ca, ["bots.example.test"])
    (folder / "self").mkdir()
    selfsigned = make_selfsigned(folder / "self", ["bots.example.test"])
    return {"ca": ca, "other": other, "leaf": leaf, "self": selfsigned}


def started(ca_file: Path, hook: Webhook, **kwargs) -> FakeTelegram:
    return FakeTelegram(
        port=0,
        ca_file=str(ca_file),
        retry_delay=0.05,
        connect_to={"bots.example.test:443": f"127.0.0.1:{hook.port}"},
        **kwargs,
    ).start()


def set_webhook(fake: FakeTelegram, url: str = URL, certificate: bytes | None = None):
    """setWebhook as a client calls it: multipart when a certificate is uploaded."""
    fields = {"url": url, "secret_token": "s3cret"}
    if certificate is None:
        data = json.dumps(fields).encode()
        ctype = "application/json"
    else:
        boundary = uuid.uuid4().hex
        parts = [
            f'--{boundary}\r\nContent-Disposition: form-data; name="{k}"\r\n\r\n{v}\r\n'.encode()
            for k, v in fields.items()
        ]
        parts.append(
            f'--{boundary}\r\nContent-Disposition: form-data; name="certificate"; '
            f'filename="cert.pem"\r\nContent-Type: application/octet-stream\r\n\r\n'.encode()
            + certificate
            + b"\r\n"
        )
        data = b"".join(parts) + f"--{boundary}--\r\n".encode()
        ctype = f"multipart/form-data; boundary={boundary}"
    request = urllib.request.Request(
        f"{fake.base_url}/bot{TOKEN}/setWebhook", data=data, headers={"Content-Type": ctype}
    )
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as error:
        return error.code, json.loads(error.read())


def info(fake: FakeTelegram) -> dict:
    with urllib.request.urlopen(f"{fake.base_url}/bot{TOKEN}/getWebhookInfo", timeout=10) as r:
        return json.loads(r.read())["result"]


def wait_for(predicate, timeout: float = 10.0) -> bool:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if predicate():
            return True
        time.sleep(0.02)
    return False


def test_an_update_reaches_a_webhook_whose_chain_verifies_against_the_ca(pki):
    hook = Webhook(*pki["leaf"])
    fake = started(pki["ca"][0], hook)
    try:
        assert set_webhook(fake)[0] == 200
        fake.push_update(TOKEN, {"update_id": 7, "message": {"text": "/start"}})
        assert wait_for(lambda: hook.bodies)
        assert hook.bodies == [{"update_id": 7, "message": {"text": "/start"}}]
        assert hook.secrets == ["s3cret"]
        assert wait_for(lambda: info(fake)["pending_update_count"] == 0)
        assert [a["ok"] for a in fake.deliveries.attempts(TOKEN)] == [True]
    finally:
        fake.stop()
        hook.stop()


def test_a_webhook_signed_by_another_ca_is_refused_counted_failed_and_retried(pki):
    hook = Webhook(*pki["leaf"])
    fake = started(pki["other"][0], hook)  # the fake trusts only another root
    try:
        set_webhook(fake)
        fake.push_update(TOKEN, {"update_id": 8})
        assert wait_for(lambda: len(fake.deliveries.attempts(TOKEN)) >= 3)
        attempts = fake.deliveries.attempts(TOKEN)
        assert not any(a["ok"] for a in attempts)
        assert all("certificate verify failed" in a["error"] for a in attempts)
        assert hook.bodies == []  # no request went out over the unverified connection
        state = info(fake)
        assert state["pending_update_count"] == 1
        assert "certificate verify failed" in state["last_error_message"]
        # Retried, the pause growing each time (Telegram backs off), the update still pending.
        times = [a["time"] for a in fake.deliveries.attempts(TOKEN)]
        assert times[2] - times[1] > times[1] - times[0]
        assert {a["update_id"] for a in fake.deliveries.attempts(TOKEN)} == {8}
    finally:
        fake.stop()
        hook.stop()


def test_an_uploaded_self_signed_certificate_is_the_one_trusted_for_the_bot(pki):
    hook = Webhook(*pki["self"])
    fake = started(pki["ca"][0], hook)
    try:
        status, body = set_webhook(fake, certificate=pki["self"][0].read_bytes())
        assert (status, body["result"]) == (200, True)
        assert info(fake)["has_custom_certificate"] is True
        assert "data" not in fake.calls(method="setWebhook")[-1]["params"]["certificate"]
        fake.push_update(TOKEN, {"update_id": 9})
        assert wait_for(lambda: hook.bodies == [{"update_id": 9}])
        # Set again without the upload: the custom certificate is gone, the CA alone is trusted
        # and the self-signed one no longer verifies.
        set_webhook(fake)
        assert info(fake)["has_custom_certificate"] is False
        fake.push_update(TOKEN, {"update_id": 10})
        assert wait_for(lambda: len(fake.deliveries.attempts(TOKEN)) >= 2)
        assert not fake.deliveries.attempts(TOKEN)[-1]["ok"]
    finally:
        fake.stop()
        hook.stop()


def test_a_garbage_certificate_upload_is_refused(pki):
    hook = Webhook(*pki["leaf"])
    fake = started(pki["ca"][0], hook)
    try:
        status, body = set_webhook(fake, certificate=b"not a certificate")
        assert status == 400 and "certificate" in body["description"]
        assert fake.webhook(TOKEN) is None
    finally:
        fake.stop()
        hook.stop()


@pytest.mark.parametrize(
    ("url", "why"),
    [
        ("http://bots.example.test/webhook/telegram/1", "An HTTPS URL must be provided"),
        ("https://bots.example.test:5000/webhook/telegram/1", "ports 80, 88, 443 or 8443"),
        ("ftp://bots.example.test/x", "An HTTPS URL must be provided"),
    ],
)
def test_set_webhook_refuses_what_telegram_refuses(pki, url, why):
    hook = Webhook(*pki["leaf"])
    fake = started(pki["ca"][0], hook)
    try:
        status, body = set_webhook(fake, url=url)
        assert status == 400 and why in body["description"]
        assert fake.webhook(TOKEN) is None
    finally:
        fake.stop()
        hook.stop()


@pytest.mark.parametrize("port", [443, 80, 88, 8443])
def test_set_webhook_accepts_telegrams_four_ports(pki, port):
    hook = Webhook(*pki["leaf"])
    fake = started(pki["ca"][0], hook)
    try:
        assert set_webhook(fake, url=f"https://bots.example.test:{port}/w")[0] == 200
    finally:
        fake.stop()
        hook.stop()


def test_plain_http_webhooks_only_behind_the_test_switch(pki):
    hook = Webhook(*pki["leaf"])
    fake = started(pki["ca"][0], hook, allow_http_webhooks=True)
    try:
        assert set_webhook(fake, url="http://127.0.0.1:5000/webhook/telegram/1")[0] == 200
    finally:
        fake.stop()
        hook.stop()
