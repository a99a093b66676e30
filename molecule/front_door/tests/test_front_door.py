"""The front door on an app host (phase 1) with its certificate from Pebble over HTTP-01:
issued, served with Pebble's chain to a client that trusts only Pebble's root, port 80 serving
only the challenge path, and a forced renewal under a loop of requests with 0 failures."""

import json
import os
import time

import testinfra

INVENTORY = os.environ["MOLECULE_INVENTORY_FILE"]
FD = testinfra.get_host(f"ansible://grimbots-molecule-fd?ansible_inventory={INVENTORY}")
OUTSIDE = testinfra.get_host(f"ansible://grimbots-molecule-fd-pebble?ansible_inventory={INVENTORY}")
NAME = "fd.molecule.test"
TRUST = "/etc/pebble/trust.pem"  # the outside host trusts Pebble's root, nothing else
LIVE = "/etc/letsencrypt/live/grimbots"

LOOP = r"""
import http.client, json, os, ssl, time
ctx = ssl.create_default_context(cafile=%(trust)r)
ok = failed = 0
errors = []
end = time.monotonic() + 120
while time.monotonic() < end and not os.path.exists("/tmp/loop.stop"):
    # A new connection (and TLS handshake) for each request: each sees the certificate served now.
    conn = http.client.HTTPSConnection(%(name)r, 443, context=ctx, timeout=5)
    try:
        conn.request("GET", "/health")
        status = conn.getresponse().status
        ok, failed = (ok + 1, failed) if status == 200 else (ok, failed + 1)
        if status != 200:
            errors.append(status)
    except Exception as exc:
        failed += 1
        errors.append(repr(exc))
    finally:
        conn.close()
    time.sleep(0.05)
json.dump({"ok": ok, "failed": failed, "errors": errors[:5]}, open("/tmp/loop.json", "w"))
"""


def _serial() -> str:
    return FD.check_output(f"openssl x509 -in {LIVE}/cert.pem -noout -serial")


def test_the_certificate_was_issued_by_pebble_over_http_01():
    issuer = FD.check_output(f"openssl x509 -in {LIVE}/cert.pem -noout -issuer")
    assert "Pebble" in issuer
    names = FD.check_output(f"openssl x509 -in {LIVE}/cert.pem -noout -ext subjectAltName")
    assert f"DNS:{NAME}" in names
    # HAProxy serves exactly that lineage (the deploy hook built site.pem from it).
    served = FD.check_output("openssl x509 -in /etc/haproxy/certs/site.pem -noout -serial")
    assert served == _serial()
    assert FD.service("certbot.timer").is_enabled


def test_https_is_served_with_pebbles_chain_to_a_client_trusting_only_pebble():
    out = OUTSIDE.check_output(
        f"curl -s -o /dev/null -w '%{{http_code}}' --cacert {TRUST} https://{NAME}/health"
    )
    assert out == "200"
    # And a client with the system's roots only refuses it (it is not a public certificate).
    assert OUTSIDE.run(f"curl -s -o /dev/null https://{NAME}/health").rc == 60


def test_port_80_redirects_everything_but_the_challenge_path():
    redirect = OUTSIDE.check_output(
        f"curl -s -o /dev/null -w '%{{http_code}} %{{redirect_url}}' http://{NAME}/go/x"
    )
    assert redirect == f"301 https://{NAME}/go/x"
    # The challenge path goes to certbot's responder (not running between issuances: 503).
    challenge = OUTSIDE.check_output(
        f"curl -s -o /dev/null -w '%{{http_code}}' http://{NAME}/.well-known/acme-challenge/t"
    )
    assert challenge == "503"


def test_gunicorns_stand_in_is_reachable_only_on_loopback():
    assert FD.socket("tcp://127.0.0.1:5000").is_listening
    assert not FD.socket("tcp://0.0.0.0:5000").is_listening


def test_a_forced_renewal_under_requests_fails_none_of_them():
    before = _serial()
    OUTSIDE.check_output("rm -f /tmp/loop.json /tmp/loop.stop")
    script = LOOP % {"trust": TRUST, "name": NAME}
    OUTSIDE.check_output(f"cat > /tmp/loop.py <<'EOF'\n{script}\nEOF")
    OUTSIDE.check_output("setsid nohup python3 /tmp/loop.py >/tmp/loop.log 2>&1 </dev/null &")
    time.sleep(3)
    # As certbot.service runs it (its drop-in trusts Pebble's CAs), forced.
    bundle = FD.check_output(
        "systemctl show certbot.service -p Environment --value | tr ' ' '\\n' | grep REQUESTS"
    )
    FD.check_output(f"env {bundle} certbot renew --force-renewal --no-random-sleep-on-renew -q")
    after = _serial()
    time.sleep(3)  # requests after the reload too
    OUTSIDE.check_output("touch /tmp/loop.stop")
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and not OUTSIDE.file("/tmp/loop.json").exists:
        time.sleep(1)
    counts = json.loads(OUTSIDE.file("/tmp/loop.json").content_string)
    print(
        f"\nRENEWAL: serial {before} -> {after}; requests ok={counts['ok']} "
        f"failed={counts['failed']} {counts['errors']}"
    )
    assert after != before
    served = FD.check_output("openssl x509 -in /etc/haproxy/certs/site.pem -noout -serial")
    assert served == after
    assert counts["failed"] == 0 and counts["ok"] > 100


def test_the_deploy_hook_refuses_a_lineage_whose_key_does_not_match():
    """A renewal the hook refuses leaves HAProxy serving the certificate it had."""
    served = FD.check_output("sha256sum /etc/haproxy/certs/site.pem")
    FD.check_output(
        f"rm -rf /tmp/bad && cp -rL {LIVE} /tmp/bad && openssl genpkey -algorithm ec "
        "-pkeyopt ec_paramgen_curve:prime256v1 -out /tmp/bad/privkey.pem"
    )
    result = FD.run("RENEWED_LINEAGE=/tmp/bad /usr/local/lib/grimbots/haproxy-acme-deploy")
    assert result.rc == 1 and "does not match" in result.stderr
    assert FD.check_output("sha256sum /etc/haproxy/certs/site.pem") == served
