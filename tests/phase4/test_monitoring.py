"""Phase 4 on the lab: Prometheus scrapes every target of what runs, loads the one rule file,
sits behind authentication, and its Watchdog reaches the receiver (the lab's fake Telegram)."""

from __future__ import annotations

import time

import grimbots_lab as lab2

# Jobs whose targets must all be up once phases 1 to 4 ran: every host's node_exporter, the
# database hosts' services, HAProxy, every Redis instance (through its host's redis_exporter)
# and the monitoring host itself; and from phase 3 the app on every app host.
ALWAYS_UP = (
    "node", "patroni", "postgres", "etcd", "haproxy", "redis", "sentinel", "prometheus",
    "alertmanager",
)  # fmt: skip


def _targets(monitoring) -> list[dict]:
    return monitoring.prometheus("targets?state=active")["activeTargets"]


def test_every_target_of_what_runs_is_up(lab, monitoring):
    apps = {lab.hosts[h]["ansible_host"] for h in lab.groups["app"]}

    def expected(t: dict) -> bool:
        job = t["labels"]["job"]
        return job in ALWAYS_UP or (
            job == "app" and t["scrapeUrl"].split("/")[2].split(":")[0] in apps
        )

    def all_up():
        targets = [t for t in _targets(monitoring) if expected(t)]
        return targets if targets and all(t["health"] == "up" for t in targets) else None

    up = lab2.wait_for(all_up, timeout=90, interval=3)
    table = sorted(
        (t["labels"]["job"], t["labels"]["instance"], t["health"]) for t in _targets(monitoring)
    )
    print("\nTARGETS:\n" + "\n".join(f"  {j:<13} {i:<28} {h}" for j, i, h in table))
    assert up, [t for t in table if t[2] != "up"]
    jobs = {t["labels"]["job"] for t in up}
    assert set(ALWAYS_UP) | {"app"} <= jobs, jobs
    # node_exporter on every host the inventory monitors, none listed by hand.
    nodes = {t["scrapeUrl"].split("/")[2].split(":")[0] for t in up if t["labels"]["job"] == "node"}
    groups = ("app", "db", "lb", "redis", "monitoring")
    monitored = {lab.hosts[h]["ansible_host"] for g in groups for h in lab.groups[g]}
    assert monitored <= nodes, monitored - nodes
    # An exporter answers even when its Redis does not: each instance must say it is up.
    redis_up = monitoring.query('redis_up{job=~"redis|sentinel"}')
    assert len(redis_up) == 4 * len(lab.groups["redis"]), redis_up  # 6379, 7001, 7002, 26379
    assert [r["metric"]["instance"] for r in redis_up if r["value"][1] != "1"] == []


def test_every_rule_of_the_rule_file_is_loaded_and_healthy(monitoring, rules):
    groups = monitoring.prometheus("rules")["groups"]
    loaded = [r for g in groups for r in g["rules"] if r["type"] == "alerting"]
    assert sorted(r["name"] for r in loaded) == sorted(rules)
    assert [r["name"] for r in loaded if r["health"] != "ok"] == []


def test_prometheus_and_alertmanager_refuse_a_caller_without_the_password(monitoring):
    for port in (monitoring.prometheus_port, monitoring.alertmanager_port):
        assert monitoring.get(port, "/-/ready", auth=False)[0] == 401, port
        assert monitoring.get(port, "/-/ready")[0] == 200, port


def test_the_watchdog_reaches_the_fake_telegram(monitoring):
    started = time.time()

    def watchdog():
        return [m for m in monitoring.messages() if "Watchdog" in (m["text"] or "")]

    seen = lab2.wait_for(watchdog, timeout=150, interval=3)
    assert seen, f"no Watchdog message at the fake Telegram (chat {monitoring.chat_id})"
    print(
        f"\nWATCHDOG: {len(seen)} message(s) at the fake Telegram; "
        f"waited {time.time() - started:.0f} s"
    )
