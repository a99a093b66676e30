"""No secret and no user text in the logs."""

from __future__ import annotations

import dataclasses
import io
import logging
import traceback

import pytest
import requests
import urllib3
from sqlalchemy.exc import IntegrityError

from grimbots import telegram
from grimbots.logs import configure_logging, json_handler
from grimbots.models import Bot
from tests.factories import make_seller


def test_a_failed_jobs_arguments_never_reach_the_log():
    stream = io.StringIO()
    logger = logging.getLogger("grimbots.test_logs")
    logger.addHandler(json_handler(stream))
    logger.propagate = False
    update = {"message": {"text": "meu cpf é 123.456.789-00"}}
    # What RQ's worker logs on a job failure: the job's arguments as extra fields.
    logger.error(
        "job %s failed",
        "j1",
        extra={"func": "grimbots.jobs.process_update", "arguments": [1, update]},
    )
    line = stream.getvalue()
    assert "j1" in line and "process_update" in line
    assert "123.456.789-00" not in line


def test_database_errors_do_not_carry_bound_values(db):
    with db.session() as session:
        seller, _ = make_seller(session)
    bot = {"seller_id": seller.id, "username": "same_bot", "webhook_secret": "s"}
    with db.session() as session:
        session.add(Bot(token="111:FIRST-SECRET-TOKEN", **bot))
    with pytest.raises(IntegrityError) as caught, db.session() as session:
        session.add(Bot(token="222:SECOND-SECRET-TOKEN", **bot))
    assert "SECRET-TOKEN" not in str(caught.value)


# A token as BotFather issues them: bot id, colon, 35 URL-safe characters.
TOKEN = "123456789:AAHfiqksKZ8WmR2zSjiQ7_v4TMAKdiHm9T0"
SECRET_PART = TOKEN.split(":")[1]


@pytest.fixture
def app_logging():
    """The app's logging setup writing into a buffer, the previous setup restored after."""
    root = logging.getLogger()
    saved = root.handlers[:], root.level
    stream = io.StringIO()
    configure_logging("DEBUG", stream)
    yield stream
    root.handlers[:], level = saved
    root.setLevel(level)


@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
def test_debug_logs_of_a_telegram_request_carry_no_token(settings, fake_tg, app_logging):
    telegram.get_client().call(TOKEN, "getMe", {}, rate_limited=False)
    assert fake_tg.calls(method="getMe", token=TOKEN)  # the request went out with the token
    lines = app_logging.getvalue()
    assert "/bot[token]/getMe" in lines  # urllib3's DEBUG line about that request
    assert SECRET_PART not in lines


def test_a_chained_ssl_or_proxy_error_is_logged_without_the_token(app_logging):
    url = f"/bot{TOKEN}/sendMessage"
    log = logging.getLogger("tests.chained_errors")
    try:
        try:
            cause = urllib3.exceptions.SSLError(f"handshake failed for {url}")
            raise requests.exceptions.SSLError(
                urllib3.exceptions.MaxRetryError(None, url, cause)
            ) from cause
        except requests.exceptions.SSLError as exc:
            raise requests.exceptions.ProxyError(f"proxy refused {TOKEN}") from exc
    except requests.exceptions.ProxyError as exc:
        log.warning("send failed for %s: %s", url, exc, exc_info=True, extra={"url": url})
    line = app_logging.getvalue()
    assert "ProxyError" in line and "SSLError" in line and "Max retries exceeded" in line
    assert SECRET_PART not in line


@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
def test_telegram_client_errors_carry_no_token(settings):
    """A TLS failure: requests' message quotes the URL, with the token in its path."""
    client = telegram.TelegramClient(
        dataclasses.replace(
            settings, telegram_api_base=settings.telegram_api_base.replace("http:", "https:")
        )
    )
    with pytest.raises(telegram.TelegramError) as caught:
        client.call(TOKEN, "getMe", {}, rate_limited=False)
    shown = "".join(traceback.format_exception(caught.value))
    assert "SSLError" in shown
    assert SECRET_PART not in shown
