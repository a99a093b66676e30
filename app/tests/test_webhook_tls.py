"""Telegram reaches the webhook over HTTPS only, verifying its certificate: the fake Telegram
delivers to the app served over TLS (werkzeug, as HAProxy would terminate it) and the app's
set-webhooks registers the URL, uploading a self-signed certificate when configured."""

from __future__ import annotations

import dataclasses
import threading
import time

import pytest
from testpki import make_ca, make_leaf, make_selfsigned
from werkzeug.serving import make_server

from grimbots import telegram
from tests.factories import make_bot, make_funnel, make_seller, start_update

HOST = "bots.example.test"  # the settings' public URL: https on 443, reached via connect_to


@pytest.fixture(scope="module")
def pki(tmp_path_factory):
    folder = tmp_path_factory.mktemp("pki")
    (folder / "other").mkdir()
    (folder / "self").mkdir()
    ca = make_ca(folder, "acme-root")
    return {
        "ca": ca,
        "leaf": make_leaf(folder, ca, [HOST]),
        "other": make_ca(folder / "other", "other-root"),
        "self": make_selfsigned(folder / "self", [HOST]),
    }


@pytest.fixture
def bot(db):
    with db.session() as session:
        seller, _ = make_seller(session)
        return make_bot(session, seller, make_funnel(session, seller))


@pytest.fixture
def serve(app, fake_tg):
    """Serve the app over TLS with a certificate pair; the fake's "HOST:443" goes there."""
    servers = []

    def start(cert_key):
        context = tuple(map(str, cert_key))
        server = make_server("127.0.0.1", 0, app, threaded=True, ssl_context=context)
        threading.Thread(target=server.serve_forever, daemon=True).start()
        servers.append(server)
        fake_tg.deliveries.connect_to[f"{HOST}:443"] = f"127.0.0.1:{server.server_port}"
        fake_tg.deliveries.retry_delay = 0.05
        return server

    yield start
    for server in servers:
        server.shutdown()


def attempts_after(fake_tg, token, count, timeout=10.0):
    end = time.monotonic() + timeout
    while time.monotonic() < end and len(fake_tg.deliveries.attempts(token)) < count:
        time.sleep(0.02)
    return fake_tg.deliveries.attempts(token)


def test_a_start_reaches_the_webhook_over_https_with_a_ca_issued_certificate(
    pki, bot, fake_tg, settings, serve
):
    fake_tg.deliveries.ca_file = str(pki["ca"][0])
    serve(pki["leaf"])
    assert telegram.set_webhooks(settings)[0]["ok"] is True
    fake_tg.push_update(bot.token, start_update(9101))
    [attempt] = attempts_after(fake_tg, bot.token, 1)
    assert (attempt["ok"], attempt["status"]) == (True, 200)  # the secret matched, accepted


def test_a_certificate_of_another_ca_is_refused_and_the_update_retried(
    pki, bot, fake_tg, settings, serve
):
    fake_tg.deliveries.ca_file = str(pki["other"][0])
    serve(pki["leaf"])
    telegram.set_webhooks(settings)
    fake_tg.push_update(bot.token, start_update(9102))
    attempts = attempts_after(fake_tg, bot.token, 3)
    assert len(attempts) >= 3 and not any(a["ok"] for a in attempts)
    assert "certificate verify failed" in attempts[0]["error"]
    assert fake_tg.deliveries.pending(bot.token) == 1


def test_set_webhooks_uploads_the_configured_self_signed_certificate(
    pki, bot, fake_tg, settings, serve
):
    fake_tg.deliveries.ca_file = str(pki["ca"][0])  # the self-signed one is not under it
    serve(pki["self"])
    custom = dataclasses.replace(settings, webhook_certificate=str(pki["self"][0]))
    telegram.set_webhooks(settings)  # no upload yet: due once a certificate is configured
    assert [d["bot_id"] for d in telegram.webhooks_due(custom)] == [bot.id]
    assert telegram.set_webhooks(custom)[0]["ok"] is True
    info = fake_tg.handle(bot.token, "getWebhookInfo", {})[1]["result"]
    assert info["has_custom_certificate"] is True
    assert telegram.webhooks_due(custom) == []
    fake_tg.push_update(bot.token, start_update(9103))
    [attempt] = attempts_after(fake_tg, bot.token, 1)
    assert (attempt["ok"], attempt["status"]) == (True, 200)


def test_set_webhooks_is_refused_for_a_plain_http_public_url(bot, fake_tg, settings):
    plain = dataclasses.replace(settings, public_url="http://127.0.0.1:5000")
    [result] = telegram.set_webhooks(plain)
    assert result["ok"] is False and "HTTPS URL" in result["error"]
    assert fake_tg.webhook(bot.token) is None
