"""Phase 3 on the lab, the app nodes behind HAProxy: requests to the public HTTPS URL are spread
over every app host, and a /start posted there, as Telegram posts it to the bot's webhook, gets
exactly one welcome at the fake Telegram, even when Telegram delivers it a second time."""

from __future__ import annotations

import json
import random
import time

import grimbots_lab as lab2

REQUESTS = 60
WELCOME_TIMEOUT = 60  # seconds for the welcome to reach the fake Telegram
LATE_DUPLICATE_WAIT = 5  # seconds more, in which a duplicate would show up


def test_requests_through_haproxy_are_spread_over_every_app_node(lab, public, haproxy):
    nodes = lab.groups["app"]
    ready = lab2.wait_for(
        lambda: all(haproxy.status(n) == "UP" for n in nodes), timeout=60, interval=1
    )
    assert ready, f"not every app node is UP in HAProxy: {haproxy.servers()}"
    before = haproxy.servers()
    statuses = [public.request("GET", "/health").status for _ in range(REQUESTS)]
    after = haproxy.servers()
    served = {n: int(after[n]["stot"]) - int(before[n]["stot"]) for n in nodes}
    print(
        f"\nSPREAD: {REQUESTS} GET /health over HTTPS through HAProxy, "
        f"{statuses.count(200)} answered 200; sessions per node (stot): {served}"
    )
    assert statuses.count(200) == REQUESTS, statuses
    # Other traffic may add sessions, never remove ours: every node took some, ours all landed.
    assert all(served[n] > 0 for n in nodes), served
    assert sum(served.values()) >= REQUESTS, served


def test_a_start_through_haproxy_over_https_gets_exactly_one_welcome(telegram, welcomes):
    chat = random.randint(2 * 10**9, 3 * 10**9)
    sender = telegram(time.monotonic() + 30)
    update = sender.start_update(random.randint(10**6, 10**9), chat, "Phase3")
    mark = welcomes.mark()
    assert sender.deliver(update), (
        "the /start was never answered 200 within 30 s: "
        + sender.summary(sender.failed(sender.attempts))
    )
    started = time.monotonic()
    got = lab2.wait_for(
        lambda: welcomes.count([chat], mark)[chat] >= 1, timeout=WELCOME_TIMEOUT, interval=1
    )
    took = time.monotonic() - started
    # Telegram's redelivery of the same update (its first answer lost on the way back) is
    # answered 200 and taken as a duplicate.
    again = sender.public.request("POST", sender.path, json.dumps(update).encode(), sender.headers)
    time.sleep(LATE_DUPLICATE_WAIT)
    count = welcomes.count([chat], mark)[chat]
    print(
        f"\nFUNNEL over HTTPS: chat {chat}: {len(sender.attempts)} delivery(ies) until 200; "
        f"welcome after {took:.1f} s; a second delivery answered {again.status}; "
        f"{count} welcome(s) {LATE_DUPLICATE_WAIT} s later"
    )
    assert got, f"no welcome for chat {chat} within {WELCOME_TIMEOUT} s"
    assert again.status == 200, (again.status, again.error, again.body[:200])
    assert count == 1, f"chat {chat} got {count} welcomes"


def test_the_first_app_hosts_front_door_is_retired_once_lb_serves(lab, lab_host):
    """Phases 1-2 ran HAProxy and certbot's renewal on the first app host; from phase 3 the front
    door is lb's, so nothing of the old one may still run or listen on 80/443 there."""
    for name in lab.groups["app"]:
        host = lab_host(name)
        running = [
            unit for unit in ("haproxy.service", "certbot.timer")
            if host.run(f"systemctl is-active --quiet {unit}").rc == 0
            or host.run(f"systemctl is-enabled --quiet {unit}").rc == 0
        ]  # fmt: skip
        listening = [s for s in host.socket.get_listening_sockets() if s.endswith((":80", ":443"))]
        assert (running, listening) == ([], []), f"{name}: the old front door still runs"
