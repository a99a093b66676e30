"""After side_effect.yml changed etcd's heartbeat: every member runs with it, and the members
restarted one at a time (each stopped only after the one before was back), so quorum held."""

import itertools
import os

import testinfra
import testinfra.utils.ansible_runner

from grimbots_infra.inventory import platform_contract

INVENTORY = os.environ["MOLECULE_INVENTORY_FILE"]
NAMES = testinfra.utils.ansible_runner.AnsibleRunner(INVENTORY).get_hosts("db")
testinfra_hosts = NAMES[:1]  # one run: the test reads every member


def _member(name: str) -> dict:
    h = testinfra.get_host(f"ansible://{name}?ansible_inventory={INVENTORY}")
    pid = h.check_output("systemctl show -p MainPID --value etcd")
    environ = h.check_output(f"tr '\\0' '\\n' </proc/{pid}/environ")
    props = ("ActiveExitTimestampMonotonic", "ActiveEnterTimestampMonotonic")
    values = h.check_output(f"systemctl show -p {' -p '.join(props)} --value etcd").split()
    return {
        "heartbeat": dict(line.split("=", 1) for line in environ.splitlines() if "=" in line).get(
            "ETCD_HEARTBEAT_INTERVAL"
        ),
        # The containers share the host's kernel, so CLOCK_MONOTONIC compares across them.
        "stopped": int(values[0]),
        "back": int(values[1]),
    }


def test_etcd_members_restarted_one_at_a_time_with_the_new_setting(host):
    members = sorted((_member(n) for n in NAMES), key=lambda m: m["back"])
    assert [m["heartbeat"] for m in members] == ["150"] * len(NAMES)
    for before, after in itertools.pairwise(members):
        assert after["stopped"] >= before["back"], members
    assert host.run(f"{platform_contract(INVENTORY)['platform_lib_dir']}/wait-etcd 30").rc == 0
