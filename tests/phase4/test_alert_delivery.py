"""Phase 4 on the lab, rule to receiver: the PostgreSQL leader killed by the failover test gave
PatroniFailover at the fake Telegram; the app stopped on its first host makes InstanceDown fire
and arrive there, and the app started again resolves it. The times are printed, the app node's
beside the bound that `for`, the scrape and evaluation intervals and Alertmanager's grouping
give."""

from __future__ import annotations

import re
import time
from datetime import datetime

import grimbots_lab as lab2


def _seconds(duration: str) -> int:
    """A Prometheus duration of one unit (15s, 1m, 2h) in seconds."""
    value, unit = re.fullmatch(r"(\d+)([smh])", str(duration)).groups()
    return int(value) * {"s": 1, "m": 60, "h": 3600}[unit]


def test_the_killed_leader_of_the_failover_test_raised_patroni_failover(lab, monitoring):
    """Run after tests/phase2/test_failover.py (scripts/test-lab.sh, pyinfra pass), whose killed
    leader and switchover moved the cluster to new timelines minutes ago."""
    history = lab2.wait_for(lambda: _history(lab), timeout=30)
    assert history, "no Patroni member answers /history"
    recent = [h for h in history if time.time() - _timestamp(h) < 600]
    assert recent, f"no failover or switchover in the last 10 minutes: {history[-2:]}"

    def message():
        return next(
            (m for m in monitoring.messages() if "PatroniFailover" in (m["text"] or "")), None
        )

    arrived = lab2.wait_for(message, timeout=120, interval=3)
    assert arrived, "PatroniFailover did not reach the fake Telegram"
    first = _timestamp(recent[0])
    print(
        f"\nALERT: PatroniFailover at the fake Telegram {arrived['received'] - first:.0f} s after "
        f"the promotion that began the first new timeline of the last 10 minutes"
    )


def test_a_stopped_app_node_pages_through_alertmanager_and_resolves(lab, monitoring, rules):
    name = lab.groups["app"][0]
    app = lab.hosts[name]
    mon = lab.hosts[lab.groups["monitoring"][0]]
    scrape = _seconds(mon["monitoring_scrape_interval"])
    evaluation = _seconds(mon["monitoring_evaluation_interval"])
    # A new group waits group_wait; an alert joining a group that already fired waits for the
    # group's next turn, group_interval.
    group = max(
        _seconds(mon["monitoring_alert_group_wait"]),
        _seconds(mon["monitoring_alert_group_interval"]),
    )
    hold = _seconds(rules["InstanceDown"].get("for", "0s"))
    bound = hold + scrape + 2 * evaluation + group
    address = app["ansible_host"]

    def about_app(text: str) -> bool:
        return "InstanceDown" in text and (address in text or name in text)

    def arrived(since: float, resolved: bool):
        for m in monitoring.messages(since):
            text = m["text"] or ""
            if about_app(text) and ("Resolved" in text or "RESOLVED" in text) == resolved:
                return m
        return None

    stopped = time.time()
    assert lab2.ssh(app, "systemctl stop grimbots-web").returncode == 0
    try:
        fired = lab2.wait_for(lambda: arrived(stopped, False), timeout=bound + 60, interval=2)
    finally:
        started = time.time()
        assert lab2.ssh(app, "systemctl start grimbots-web").returncode == 0
    assert fired, f"no InstanceDown for {address} at the fake Telegram within {bound + 60} s"
    took = fired["received"] - stopped
    print(
        f"\nALERT: grimbots-web stopped on {name}; InstanceDown at the fake "
        f"Telegram after {took:.0f} s (bound {bound} s = for {hold} + scrape {scrape} + "
        f"2 x evaluation {evaluation} + group_wait or group_interval {group})"
    )
    resolved = lab2.wait_for(lambda: arrived(started, True), timeout=bound + 120, interval=2)
    assert resolved, "InstanceDown was not resolved at the fake Telegram after the app came back"
    back = resolved["received"] - started
    print(f"ALERT: resolved at the fake Telegram {back:.0f} s after grimbots-web started again")


def _history(lab) -> list | None:
    for name in lab.groups["db"]:
        history = lab2.rest(lab.hosts[name]["ansible_host"], "/history")
        if history:
            return history
    return None


def _timestamp(entry: list) -> float:
    return datetime.fromisoformat(entry[3]).timestamp()
