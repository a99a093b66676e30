"""GRIMBOTS_WEB_BIND may list several addresses: the deploy binds loopback and the host's
private address only (issue 17), never every address."""

from grimbots.gunicorn_app import GrimbotsWeb
from grimbots.settings import Settings


def test_web_binds_every_comma_separated_address():
    settings = Settings.from_env({"GRIMBOTS_WEB_BIND": "127.0.0.1:5000,10.0.0.11:5000"})
    web = GrimbotsWeb(settings)
    assert web.cfg.bind == ["127.0.0.1:5000", "10.0.0.11:5000"]


def test_web_binds_one_address_as_before():
    web = GrimbotsWeb(Settings.from_env({"GRIMBOTS_WEB_BIND": "0.0.0.0:5000"}))
    assert web.cfg.bind == ["0.0.0.0:5000"]
