"""Phase 3 on the lab, the load balancer: HTTPS with the lab CA's certificate in front of the app
nodes that run, plain HTTP sent to HTTPS, stats and metrics only with the password."""

from __future__ import annotations

import base64
import http.client
import socket
import ssl
import urllib.error
import urllib.request

import pytest

import grimbots_lab as lab2


@pytest.fixture(scope="module")
def lb(lb_vars):
    return lb_vars


@pytest.fixture(scope="module")
def tls(lab_tls) -> ssl.SSLContext:
    """A client context that trusts only the lab CA the role made on the lb host."""
    return lab_tls


def test_health_over_https_reaches_an_app_node_through_a_verified_certificate(lb, tls):
    url = f"https://{lb['ansible_host']}:{lb['haproxy_https_port']}/health"
    answer = lab2.wait_for(lambda: _get(url, tls), timeout=30)
    assert answer and answer[0] == 200, answer


def _handshake(lb, version: ssl.TLSVersion) -> str:
    """The protocol a client limited to `version` gets from HAProxy, or the error it gets. The
    client allows every old protocol (security level 0), so a refusal is the server's."""
    client = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    client.check_hostname, client.verify_mode = False, ssl.CERT_NONE
    client.set_ciphers("DEFAULT:@SECLEVEL=0")
    client.minimum_version = client.maximum_version = version
    try:
        with (
            socket.create_connection((lb["ansible_host"], int(lb["haproxy_https_port"])), 5) as raw,
            client.wrap_socket(raw) as conn,
        ):
            return conn.version()
    except (ssl.SSLError, OSError) as exc:
        return f"refused: {exc}"


def test_tls_below_1_2_is_refused(lb):
    assert _handshake(lb, ssl.TLSVersion.TLSv1_2) == "TLSv1.2"  # the same client gets 1.2
    for old in (ssl.TLSVersion.TLSv1, ssl.TLSVersion.TLSv1_1):
        assert _handshake(lb, old).startswith("refused"), old


def test_plain_http_is_sent_to_https(lb):
    conn = http.client.HTTPConnection(lb["ansible_host"], int(lb["haproxy_http_port"]), timeout=5)
    conn.request("GET", "/health")
    resp = conn.getresponse()
    assert resp.status in (301, 302, 307, 308), resp.status
    assert resp.getheader("Location", "").startswith("https://"), resp.getheader("Location")


def test_stats_and_metrics_need_the_password(lb):
    base = f"http://{lb['ansible_host']}:{lb['haproxy_stats_port']}"
    token = base64.b64encode(f"{lb['haproxy_stats_user']}:{lb['haproxy_stats_password']}".encode())
    for path in ("/stats", "/metrics"):
        assert _get(base + path)[0] == 401, path
        status, body = _get(base + path, headers={"Authorization": f"Basic {token.decode()}"})
        assert status == 200, path
    assert b"haproxy_backend_active_servers" in body


def _get(url: str, context: ssl.SSLContext | None = None, headers: dict | None = None):
    req = urllib.request.Request(url, headers=headers or {})
    try:
        with urllib.request.urlopen(req, timeout=5, context=context) as resp:  # noqa: S310 - lab
            return resp.status, resp.read()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read()
    except OSError as exc:
        return 0, str(exc).encode()
