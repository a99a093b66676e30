"""The lab's probe matrix (issue 17): from `outside` (out1, the internet) and from one host of
each group, every listening TCP port of every firewalled host is probed, and the result must be
what the table of who talks to whom (roles/firewall, docs/network.md) says: 0 unexpected opens,
0 unexpected refusals. Also: every host the phase deploys has the firewall, and no internal
service listens on every address.

Run after a phase's suite, with GRIMBOTS_LAB_PHASE at that phase (scripts/test-lab.sh: after
phases 1 and 4). Probes run inside the source containers (`nc -z -w1`, all in parallel), so the
whole matrix takes seconds; the control machine is an admin source and never probes.
"""

from __future__ import annotations

import ipaddress
import os
import subprocess
from collections import Counter
from concurrent.futures import ThreadPoolExecutor

import pytest

from grimbots_infra import firewall
from grimbots_lab import PYINFRA_LIMITS, load_lab

PHASE = int(os.environ.get("GRIMBOTS_LAB_PHASE") or 1)
SOURCE_GROUPS = ("outside", "app", "db", "lb", "redis", "monitoring", "telegram")
WILDCARDS = ("0.0.0.0", "*", "[::]")


def container(host: str) -> str:
    return f"grimbots-lab-{host}"


def sh(host: str, script: str, timeout: float = 60) -> subprocess.CompletedProcess:
    return subprocess.run(
        ["docker", "exec", "-i", container(host), "sh", "-s"],
        input=script, capture_output=True, text=True, timeout=timeout,
    )  # fmt: skip


@pytest.fixture(scope="module")
def lab():
    return load_lab()


def deployed(lab) -> list[str]:
    """The hosts phase PHASE's deploys reach (the app on the first app host before phase 3)."""
    hosts = [h for g in PYINFRA_LIMITS[PHASE] for h in lab.group(g)]
    first_app = lab.group("app")[:1]
    return sorted({h for h in hosts if PHASE >= 3 or h not in lab.group("app") or h in first_app})


def firewalled(lab) -> list[str]:
    platform = {h for g in PYINFRA_LIMITS[4] for h in lab.group(g)}
    with ThreadPoolExecutor(16) as pool:
        loaded = pool.map(
            lambda h: sh(h, "nft list table inet grimbots >/dev/null").returncode, platform
        )
        return sorted(h for h, rc in zip(platform, loaded, strict=True) if rc == 0)


def listeners(host: str) -> list[tuple[str, int]]:
    """(address, port) of every listening TCP socket of ``host`` (ss -ltnH)."""
    found = []
    for line in sh(host, "ss -ltnH").stdout.splitlines():
        local = line.split()[3]
        address, port = local.rsplit(":", 1)
        found.append((address.split("%")[0], int(port)))
    return sorted(set(found))


def rules_of(lab, host: str) -> list[dict]:
    v = lab.vars(host)
    names = ("platform_groups", "groups", "hostvars", "platform_phase", "platform_front_door",
             "firewall_ports", "firewall_admin_sources", "firewall_admin_all_ports")  # fmt: skip
    variables = {n: v[n] for n in names}
    return firewall.rules(v["firewall_flows"], host, v["group_names"], variables)


def allowed(rules: list[dict], source: str, port: int) -> bool:
    address = ipaddress.ip_address(source)
    for rule in rules:
        nets = [ipaddress.ip_network(s, strict=False) for s in rule["ip"] + rule["ip6"]]
        if (rule["any"] or any(address in n for n in nets)) and (
            not rule["ports"] or port in rule["ports"]
        ):
            return True
    return False


def probe(
    source: str, targets: list[tuple[str, int]], wait: int = 1
) -> dict[tuple[str, int], bool]:
    """Connect from ``source`` to every target at once; True where the connection opened."""
    lines = [
        f"(nc -z -w{wait} {a} {p} >/dev/null 2>&1 && echo '{a} {p} open' || echo '{a} {p} shut') &"
        for a, p in targets
    ]
    out = sh(source, "\n".join([*lines, "wait"])).stdout.split("\n")
    result = {}
    for line in filter(None, out):
        a, p, verdict = line.split()
        result[(a, int(p))] = verdict == "open"
    assert set(result) == set(targets), f"{source}: not every probe answered"
    return result


def test_every_host_of_the_phase_has_the_firewall(lab):
    assert firewalled(lab) == deployed(lab)


def test_no_internal_service_listens_on_every_address(lab):
    """Only ports the table opens to the internet or the admin sources (sshd, the front door)
    may listen on every address; every other service binds its private address."""
    wrong = []
    for host in deployed(lab):
        public = {p for r in rules_of(lab, host) if r["any"] for p in r["ports"]}
        public.add(int(lab.vars(host)["firewall_ssh_port"]))
        wrong += [
            f"{host}:{a}:{p}" for a, p in listeners(host) if a in WILDCARDS and p not in public
        ]
    assert wrong == [], f"internal services listening on every address: {wrong}"


def test_probe_matrix_matches_the_table_of_who_talks_to_whom(lab):
    targets: dict[str, list[tuple[str, int]]] = {}
    for host in firewalled(lab):
        own = lab.vars(host)["ansible_host"]
        targets[host] = sorted(
            {(own if a in WILDCARDS else a, p) for a, p in listeners(host)
             if not a.startswith(("127.", "[::1]", "[::ffff:127.")) and ":" not in a.strip("[]")}
        )  # fmt: skip
    sources = [h for g in SOURCE_GROUPS for h in lab.group(g)[:1]]
    every = sorted({t for ts in targets.values() for t in ts})
    with ThreadPoolExecutor(len(sources)) as pool:
        results = dict(zip(sources, pool.map(lambda s: probe(s, every), sources), strict=True))
    counts, unexpected = Counter(), []
    owner = {t: h for h, ts in targets.items() for t in ts}
    for source in sources:
        address = lab.vars(source)["ansible_host"]
        for target in every:
            host = owner[target]
            expected = source == host or allowed(rules_of(lab, host), address, target[1])
            opened = results[source][target]
            if opened != expected and not opened:  # a refusal is confirmed once, more slowly
                opened = probe(source, [target], wait=3)[target]
            counts["probes"] += 1
            if opened == expected:
                counts["open as expected" if opened else "refused as expected"] += 1
            else:
                kind = "unexpected open" if opened else "unexpected refusal"
                counts[kind + "s"] += 1
                unexpected.append(f"{kind}: {source} -> {host} {target[0]}:{target[1]}")
    names = ("probes", "open as expected", "refused as expected", "unexpected opens",
             "unexpected refusals")  # fmt: skip
    print(f"\nprobe matrix, phase {PHASE}, {len(sources)} sources x {len(every)} ports: "
          + ", ".join(f"{n} {counts[n]}" for n in names))  # fmt: skip
    assert unexpected == [], "\n".join(unexpected)
