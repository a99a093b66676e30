"""Phase 1 on the lab over HTTPS: the front door on app1 serves a certificate Pebble (the lab's
ACME CA on out1) issued over HTTP-01, to a buyer on the internet (out1) who trusts only Pebble."""

import pytest

TRUST = "/etc/pebble/trust.pem"  # written by lab/outside/pebble.yml on the outside host


@pytest.fixture(scope="module")
def outside(lab, lab_host):
    return lab_host(lab.groups["outside"][0])


def _front_door_name(app_vars) -> str:
    return app_vars["haproxy_acme_domains"][0]


def test_a_tracking_link_over_https_from_the_internet_verifies_pebbles_certificate(
    outside, app_vars, demo_bot
):
    name = _front_door_name(app_vars)
    assert app_vars["grimbots_public_url"] == f"https://{name}"
    # curl verifies the chain (against Pebble's roots only) and the host name; no redirect followed.
    out = outside.run(
        f"curl -sS -m 10 --cacert {TRUST} -o /dev/null "
        "-w '%{http_code} %{ssl_verify_result}' "
        f"https://{name}/go/{demo_bot['pool_slug']}?utm_source=https-test"
    )
    assert out.rc == 0, out.stderr
    status, verify = out.stdout.split()
    assert status == "302" and verify == "0", out.stdout


def test_the_certificate_was_issued_by_pebble_for_the_front_doors_name(app_host, app_vars):
    name = _front_door_name(app_vars)
    live = f"/etc/letsencrypt/live/{app_vars['haproxy_acme_cert_name']}/cert.pem"
    issuer = app_host.check_output(f"openssl x509 -in {live} -noout -issuer")
    sans = app_host.check_output(f"openssl x509 -in {live} -noout -ext subjectAltName")
    assert "Pebble" in issuer, issuer
    assert f"DNS:{name}" in sans, sans
    served = app_host.check_output(
        f"openssl x509 -in {app_vars['haproxy_tls_dir']}/site.pem -noout -serial"
    )
    assert served == app_host.check_output(f"openssl x509 -in {live} -noout -serial")


def test_the_internet_cannot_reach_gunicorn_only_the_front_door(outside, app_vars):
    """out1 reaches 443 and 80 (which redirects); Gunicorn's port is not for the internet."""
    name = _front_door_name(app_vars)
    redirect = outside.check_output(
        f"curl -sS -m 10 -o /dev/null -w '%{{http_code}} %{{redirect_url}}' http://{name}/health"
    )
    assert redirect == f"301 https://{name}/health", redirect
    direct = outside.run(
        f"curl -sS -m 3 -o /dev/null http://{name}:{app_vars['grimbots_web_port']}/health"
    )
    assert direct.rc != 0, direct.stdout


def test_the_fake_telegram_verifies_webhooks_against_pebbles_roots_only(lab, lab_host):
    """tg1 runs as Telegram does: https only (no --allow-http-webhooks), Pebble's roots as CAs."""
    tg = lab_host(lab.groups["telegram"][0])
    unit = tg.check_output("systemctl show fake-telegram -p ExecStart --value")
    assert "--allow-http-webhooks" not in unit
    assert "--ca-file /opt/fake-telegram/ca.pem" in unit
    assert "BEGIN CERTIFICATE" in tg.file("/opt/fake-telegram/ca.pem").content_string
