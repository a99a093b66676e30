"""X-Forwarded-For is believed only from configured proxies."""

from __future__ import annotations

import ipaddress

import pytest

from grimbots.proxies import client_address
from grimbots.settings import Settings, SettingsError

LB = [ipaddress.ip_network("10.0.0.0/24"), ipaddress.ip_network("::1/128")]


@pytest.mark.parametrize(
    "remote, header, trusted, expected",
    [
        ("203.0.113.9", "1.2.3.4", LB, "203.0.113.9"),  # not from a proxy: header ignored
        ("10.0.0.5", "1.2.3.4", [], "10.0.0.5"),  # no proxies configured (the default)
        ("10.0.0.5", "1.2.3.4", LB, "1.2.3.4"),
        ("10.0.0.5", "6.6.6.6, 1.2.3.4", LB, "1.2.3.4"),  # the client's own claim is not trusted
        ("10.0.0.5", "1.2.3.4, 10.0.0.9", LB, "1.2.3.4"),  # two trusted hops
        ("10.0.0.5", "not-an-ip", LB, "10.0.0.5"),
        ("10.0.0.5", "1.2.3.4, garbage", LB, "10.0.0.5"),
        ("10.0.0.5", "", LB, "10.0.0.5"),
        ("::1", "2001:db8::1", LB, "2001:db8::1"),
    ],
)
def test_client_address(remote, header, trusted, expected):
    assert client_address(remote, header, trusted) == expected


def test_trusted_proxies_setting_parses_cidrs_and_refuses_garbage():
    settings = Settings.from_env({"GRIMBOTS_TRUSTED_PROXIES": "10.0.0.0/24, 192.0.2.1"})
    assert [str(n) for n in settings.trusted_proxies] == ["10.0.0.0/24", "192.0.2.1/32"]
    assert Settings.from_env({}).trusted_proxies == []
    with pytest.raises(SettingsError, match="GRIMBOTS_TRUSTED_PROXIES"):
        Settings.from_env({"GRIMBOTS_TRUSTED_PROXIES": "10.0.0.0/33"})


def test_a_click_stores_the_forwarded_address_only_behind_a_trusted_proxy(
    database_url, redis_client, fake_tg
):
    from grimbots import db as db_module
    from grimbots import redis_pool
    from grimbots.app import create_app
    from grimbots.funnel import tracking_key
    from tests.conftest import make_settings
    from tests.factories import make_bot, make_pool, make_seller

    def click_ip(trusted: str, remote: str) -> str:
        settings = make_settings(database_url, GRIMBOTS_TRUSTED_PROXIES=trusted)
        db_module.reset_db()
        redis_pool.reset_pools()
        db_module.get_db(settings)
        redis_pool.get_pools(settings)
        app = create_app(settings)
        with db_module.get_db().session() as session:
            seller, _ = make_seller(session)
            pool = make_pool(session, seller, [(make_bot(session, seller), 1)])
            slug = pool.slug
        resp = app.test_client().get(
            f"/go/{slug}",
            headers={"X-Forwarded-For": "198.51.100.7"},
            environ_base={"REMOTE_ADDR": remote},
        )
        token = resp.headers["Location"].rsplit("=", 1)[1]
        return redis_client.hget(tracking_key(token), "ip")

    try:
        assert click_ip("", "203.0.113.9") == "203.0.113.9"
        assert click_ip("10.0.0.0/8", "203.0.113.9") == "203.0.113.9"
        assert click_ip("10.0.0.0/8", "10.1.2.3") == "198.51.100.7"
    finally:
        db_module.reset_db()
        redis_pool.reset_pools()
