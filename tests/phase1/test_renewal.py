"""A forced renewal on the lab's front door (app1) while Telegram sends about 20 updates a
second through it: certbot renews from Pebble as certbot.timer would (`certbot renew`, its unit's
environment), the deploy hook swaps the certificate and reloads HAProxy, and no update fails.
Slow-ish (about 30 s): run on one lab pass only (scripts/test-lab.sh, the Ansible pass)."""

import json
import random
import time

import pytest
from conftest import wait_for

TRUST = "/etc/pebble/trust.pem"  # on the outside host (lab/outside/pebble.yml)
RATE = 20  # updates per second

# Runs on out1 (the internet): RATE updates a second until /tmp/renewal-load.stop, each on a new
# TLS connection verifying the served certificate against Pebble's roots only.
LOAD = r"""
import concurrent.futures, http.client, json, os, ssl, threading, time
ctx = ssl.create_default_context(cafile=%(trust)r)
counts = {"ok": 0, "failed": 0}
errors = []
lock = threading.Lock()

def send(n):
    update = {"update_id": %(base)d + n, "message": {"message_id": 1, "date": int(time.time()),
              "chat": {"id": %(chat)d + n, "type": "private", "first_name": "Load"},
              "from": {"id": %(chat)d + n, "is_bot": False, "first_name": "Load"},
              "text": "/start"}}
    conn = http.client.HTTPSConnection(%(name)r, 443, context=ctx, timeout=10)
    try:
        conn.request("POST", %(path)r, json.dumps(update), {"Content-Type": "application/json",
                     "X-Telegram-Bot-Api-Secret-Token": %(secret)r})
        status = conn.getresponse().status
        error = None if status == 200 else status
    except Exception as exc:
        error = repr(exc)
    finally:
        conn.close()
    with lock:
        counts["failed" if error else "ok"] += 1
        if error:
            errors.append(error)

# One update every 1/RATE s whatever the answers' latency (a pool sends them), each on a new
# TLS connection that sees the certificate served at that moment.
start = time.monotonic()
n = 0
with concurrent.futures.ThreadPoolExecutor(16) as pool:
    while time.monotonic() - start < 180 and not os.path.exists("/tmp/renewal-load.stop"):
        n += 1
        pool.submit(send, n)
        time.sleep(max(0.0, start + n / %(rate)d - time.monotonic()))
    sent_for = time.monotonic() - start
json.dump({**counts, "sent": n, "errors": errors[:5], "seconds": sent_for},
          open("/tmp/renewal-load.json", "w"))
"""


@pytest.fixture(scope="module")
def outside(lab, lab_host):
    return lab_host(lab.groups["outside"][0])


def _served_serial(outside, name: str) -> str:
    return outside.check_output(
        f"openssl s_client -connect {name}:443 -servername {name} -verify_return_error "
        f"-CAfile {TRUST} </dev/null 2>/dev/null | openssl x509 -noout -serial"
    )


def test_a_forced_renewal_under_20_updates_a_second_fails_none_and_changes_the_served_serial(
    outside, app_host, app_vars, demo_bot
):
    name = app_vars["haproxy_acme_domains"][0]
    before = _served_serial(outside, name)
    script = LOAD % {
        "trust": TRUST,
        "name": name,
        "path": f"/webhook/telegram/{demo_bot['bot_id']}",
        "secret": demo_bot["webhook_secret"],
        "rate": RATE,
        "base": random.randint(10**9, 2 * 10**9 - 10**5),
        "chat": random.randint(10**9, 2 * 10**9 - 10**5),
    }
    outside.check_output("rm -f /tmp/renewal-load.json /tmp/renewal-load.stop")
    outside.check_output(f"cat > /tmp/renewal-load.py <<'EOF'\n{script}\nEOF")
    outside.check_output(
        "setsid nohup python3 /tmp/renewal-load.py >/tmp/renewal-load.log 2>&1 </dev/null &"
    )
    time.sleep(3)
    # certbot.timer's command, forced, in its unit's environment (the drop-in trusts Pebble).
    env = app_host.check_output(
        "systemctl show certbot.service -p Environment --value | tr ' ' '\\n' | grep REQUESTS"
    )
    started = time.monotonic()
    app_host.check_output(f"env {env} certbot renew --force-renewal --no-random-sleep-on-renew -q")
    renewal_s = time.monotonic() - started
    after = wait_for(lambda: (s := _served_serial(outside, name)) != before and s, timeout=15)
    time.sleep(3)  # updates after the reload too
    outside.check_output("touch /tmp/renewal-load.stop")
    assert wait_for(lambda: outside.file("/tmp/renewal-load.json").exists, timeout=30)
    counts = json.loads(outside.file("/tmp/renewal-load.json").content_string)
    print(
        f"\nRENEWAL: served serial {before} -> {after}; certbot renew {renewal_s:.1f} s; updates "
        f"sent={counts['sent']} ok={counts['ok']} failed={counts['failed']} in "
        f"{counts['seconds']:.1f} s ({counts['sent'] / counts['seconds']:.1f}/s) {counts['errors']}"
    )
    assert after and after != before
    assert counts["failed"] == 0, counts
    assert counts["ok"] == counts["sent"] >= RATE * 5, counts
