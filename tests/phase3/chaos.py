"""The faults of the soak (tests/phase3/test_soak.py) and Telegram's side of it: /start updates
arrive through HAProxy over HTTPS while, in turn, an app node's host is killed, a Redis Cluster
master's host is killed, the queue Redis primary is killed and HAProxy is reloaded.

Telegram's side is played as Telegram plays it: an open loop of new chats (RATE updates/s,
whatever the answers), every update not answered 200 (an error status, a reset, a timeout)
delivered again a second later until it is. Each fault prints its measured figure against its
target (the recovery knob of its role) and must stay within twice that target; the reloads must
fail no request at all. At the end every update was answered 200 and has exactly one welcome at
the fake Telegram: 0 missing, 0 doubled. Whatever was killed is started again (in `finally`),
and the cluster's placement is restored with the role's own helper, so the lab is whole for the
suites that follow.
"""

from __future__ import annotations

import contextlib
import os
import random
import shlex
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor, wait

import redis
from redis.crc import key_slot

import grimbots_lab as lab2

RATE = float(os.environ.get("GRIMBOTS_CHAOS_RATE", "20"))  # updates/s offered
# The load runs until the faults are done; this bounds it whatever happens.
MAX_LOAD_SECONDS = float(os.environ.get("GRIMBOTS_CHAOS_MAX_SECONDS", "200"))
WARMUP = 3.0  # seconds of load before the first fault
SETTLE = 3.0  # seconds of load after the last one
POLL = 0.2  # seconds between two looks at a recovery
SENDERS = 256  # threads delivering (open loop: enough for every update in redelivery at once)
CLIENT_TIMEOUT = 10.0  # seconds a delivery waits for its answer (HAProxy retries inside it)
REDELIVERY_DEADLINE = 120.0  # seconds after the load ends for every update to be answered 200
ANSWER_DEADLINE = 120.0  # seconds after that for every welcome to arrive
HOST_BACK_TIMEOUT = 150.0  # seconds for a started host's services to be back
QUEUE_UNIT = "redis-server@queue"  # roles/queue_redis/vars/main.yml
PLACEMENT = "redis cluster placement"  # what `finally` restores after a Redis host's return


def _verdict(took: float | None, target: float) -> str:
    if took is None:
        return f"target {target:g} s: MISSED (not within the wait)"
    return f"target {target:g} s: {'met' if took <= target else 'MISSED'}"


def _when(check: Callable[[], object], timeout: float, interval: float = POLL) -> float | None:
    """time.monotonic() when check() first returns a truthy value, None after ``timeout`` s."""
    deadline = time.monotonic() + timeout
    while True:
        with contextlib.suppress(Exception):
            if check():
                return time.monotonic()
        if time.monotonic() >= deadline:
            return None
        time.sleep(interval)


class Load:
    """``rate`` /start updates a second for new chats, each delivered Telegram-style from a pool
    thread, from start() until stop() or ``max_seconds``."""

    def __init__(self, telegram, rate: float = RATE, max_seconds: float = MAX_LOAD_SECONDS):
        self.telegram = telegram
        self.rate = rate
        self.max_seconds = max_seconds
        self.updates: list[dict] = []
        self.futures = []
        self.started = 0.0
        self._base_chat = random.randint(2 * 10**9, 3 * 10**9)
        self._base_update = random.randint(10**6, 10**9)
        self._stop = threading.Event()
        self._pool = ThreadPoolExecutor(max_workers=SENDERS)
        self._thread = threading.Thread(target=self._run, daemon=True)

    def start(self) -> None:
        self.started = time.monotonic()
        self._thread.start()

    def _run(self) -> None:
        for i in range(int(self.rate * self.max_seconds)):
            delay = self.started + i / self.rate - time.monotonic()
            if self._stop.wait(max(0.0, delay)):
                return
            update = self.telegram.start_update(
                self._base_update + i, self._base_chat + i, "Chaos3"
            )
            self.updates.append(update)
            self.futures.append(self._pool.submit(self.telegram.deliver, update))

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=10)

    def answered(self, timeout: float) -> int:
        """Updates answered 200, once every delivery ended (at most ``timeout`` s)."""
        done, _ = wait(self.futures, timeout=timeout)
        self._pool.shutdown(wait=False, cancel_futures=True)
        return sum(1 for f in done if not f.exception() and f.result())


class RedisHosts:
    """The Redis hosts' cluster instances and Sentinels, as the inventory describes them."""

    def __init__(self, lab):
        self.lab = lab
        self.names = lab.groups["redis"]
        first = lab.hosts[self.names[0]]
        self.first = first
        self.address = {n: lab.hosts[n]["redis_cluster_address"] for n in self.names}
        self.name_of = {a: n for n, a in self.address.items()}
        self.queue_address = {n: lab.hosts[n]["queue_redis_address"] for n in self.names}
        self.ports = [int(p) for p in first["redis_cluster_ports"]]
        self.cluster_password = first["redis_cluster_password"]
        self.queue_password = first["queue_redis_password"]
        self.master_name = first["queue_redis_master_name"]
        self.sentinel_port = int(first["queue_redis_sentinel_port"])

    def client(self, address: str, port: int, password: str | None = None) -> redis.Redis:
        return redis.Redis(
            host=address,
            port=port,
            password=password or self.cluster_password,
            socket_timeout=2,
            socket_connect_timeout=2,
            decode_responses=True,
        )

    def instances(self, names: list[str] | None = None) -> list[tuple[str, int]]:
        return [(self.address[n], p) for n in names or self.names for p in self.ports]

    def nodes(self, address: str, port: int) -> dict[str, dict]:
        """CLUSTER NODES as one instance sees it: 'addr:port' -> node (redis-py's parsing)."""
        with self.client(address, port) as c:
            return c.execute_command("CLUSTER NODES")

    def state_ok(self, address: str, port: int) -> bool:
        with self.client(address, port) as c:
            return c.execute_command("CLUSTER INFO")["cluster_state"] == "ok"

    @staticmethod
    def masters(nodes: dict[str, dict]) -> dict[str, dict]:
        """Live masters that serve slots."""
        return {
            addr: n
            for addr, n in nodes.items()
            if "master" in n["flags"] and "fail" not in n["flags"] and n["slots"]
        }

    @staticmethod
    def placement(nodes: dict[str, dict], hosts: list[str]) -> tuple[bool, bool]:
        """(one master per host, no replica on its master's host)."""
        by_id = {n["node_id"]: addr for addr, n in nodes.items()}
        masters = RedisHosts.masters(nodes)
        one_each = sorted(a.rsplit(":", 1)[0] for a in masters) == sorted(hosts)
        apart = all(
            by_id.get(n["master_id"], "").rsplit(":", 1)[0] != addr.rsplit(":", 1)[0]
            for addr, n in nodes.items()
            if "slave" in n["flags"]
        )
        return one_each, apart

    def sentinel_primaries(self) -> dict[str, tuple[str, int] | None]:
        """Each Sentinel's answer to GET-MASTER-ADDR-BY-NAME (None: no answer)."""
        seen: dict[str, tuple[str, int] | None] = {}
        for name in self.names:
            try:
                with self.client(
                    self.queue_address[name], self.sentinel_port, self.queue_password
                ) as s:
                    addr = s.execute_command(
                        "SENTINEL", "GET-MASTER-ADDR-BY-NAME", self.master_name
                    )
                seen[name] = (addr[0], int(addr[1])) if addr else None
            except redis.RedisError:
                seen[name] = None
        return seen

    def agreed_primary(self) -> tuple[str, int] | None:
        answers = set(self.sentinel_primaries().values())
        return answers.pop() if len(answers) == 1 and None not in answers else None


def _probe_key(ranges: list[list[str]]) -> str:
    """A key whose slot is in the first of ``ranges`` (redis-py's slot ranges)."""
    low, high = int(ranges[0][0]), int(ranges[0][-1])
    for n in range(200_000):
        key = f"grimbots:phase3-probe:{n}"
        if low <= key_slot(key.encode()) <= high:
            return key
    raise AssertionError(f"no probe key for slots {low}-{high}")


class Faults:
    """The faults in turn, their figures, and what must be started again."""

    def __init__(self, lab, haproxy, containers, telegram):
        self.lab = lab
        self.haproxy = haproxy
        self.containers = containers
        self.telegram = telegram
        self.redis = RedisHosts(lab)
        self.figures: list[str] = []
        self.problems: list[str] = []
        self.pending: dict[str, Callable[[], object]] = {}  # what `finally` starts again

    def note(self, line: str) -> None:
        print(line, flush=True)
        self.figures.append(line)

    def check(self, ok: bool, problem: str) -> None:
        if not ok:
            self.problems.append(problem)

    def all_app_nodes_up(self) -> bool:
        return all(self.haproxy.status(n) == "UP" for n in self.lab.groups["app"])

    # -- an app node's host ---------------------------------------------------------------------
    def app_node_killed(self) -> None:
        victim = self.lab.groups["app"][-1]
        target = float(self.haproxy.lb["haproxy_recovery_seconds"])
        assert lab2.wait_for(self.all_app_nodes_up, timeout=60, interval=0.5), (
            f"before the kill, not every app node is UP: {self.haproxy.servers()}"
        )
        t_kill = self.containers.kill(victim)
        self.pending[victim] = lambda: self.containers.start(victim)
        down_at = _when(lambda: self.haproxy.status(victim).startswith("DOWN"), timeout=3 * target)
        down = None if down_at is None else down_at - t_kill
        time.sleep(2.0)  # the load runs on the other nodes meanwhile
        window_end = (down_at or time.monotonic()) + 1.0
        firsts = self.telegram.during(t_kill, window_end, first_only=True)
        failed = self.telegram.failed(firsts)
        t_start = time.monotonic()
        self.containers.start(victim, timeout=HOST_BACK_TIMEOUT)
        up_at = _when(lambda: self.haproxy.status(victim) == "UP", timeout=HOST_BACK_TIMEOUT)
        if up_at is not None:
            self.pending.pop(victim)
        self.note(
            f"APP NODE: {victim} killed (docker kill); HAProxy marked it DOWN after "
            + (f"{down:.1f} s" if down is not None else f"more than {3 * target:g} s")
            + f" ({_verdict(down, target)}, bound {2 * target:g} s); "
            f"{len(failed)} of {len(firsts)} first deliveries until 1 s after that failed "
            f"({self.telegram.summary(failed)}), each redelivered; started again, UP in HAProxy "
            + (f"{up_at - t_start:.1f} s later" if up_at else f"not within {HOST_BACK_TIMEOUT} s")
        )
        self.check(down is not None and down <= 2 * target, f"{victim} DOWN after {down} s")
        self.check(up_at is not None, f"{victim} not UP again in HAProxy")

    # -- a Redis Cluster master's host ----------------------------------------------------------
    def cluster_master_host_killed(self) -> None:
        r = self.redis
        target = float(r.first["redis_cluster_recovery_seconds"])
        assert lab2.wait_for(
            lambda: all(r.state_ok(a, p) for a, p in r.instances()), timeout=60, interval=1
        ), "before the kill, not every cluster instance says cluster_state:ok"
        nodes = r.nodes(*r.instances()[0])
        masters = r.masters(nodes)
        queue_primary = lab2.wait_for(r.agreed_primary, timeout=30, interval=1)
        master_hosts = [
            n for n in r.names if any(a.startswith(f"{r.address[n]}:") for a in masters)
        ]
        # A master's host that does not hold the queue primary: one fault at a time.
        others = [n for n in master_hosts if not queue_primary or r.address[n] != queue_primary[0]]
        assert master_hosts, f"no live master with slots: {nodes}"
        victim = (others or master_hosts)[0]
        lost = {a: m for a, m in masters.items() if a.startswith(f"{r.address[victim]}:")}
        probes = [_probe_key(m["slots"]) for m in lost.values()]
        survivors = [n for n in r.names if n != victim]

        def recovered() -> bool:
            if not all(r.state_ok(a, p) for a, p in r.instances(survivors)):
                return False
            view = r.masters(r.nodes(*r.instances(survivors)[0]))
            for key in probes:
                slot = key_slot(key.encode())
                owner = next(
                    (
                        a
                        for a, m in view.items()
                        if any(int(s[0]) <= slot <= int(s[-1]) for s in m["slots"])
                    ),
                    None,
                )
                if owner is None or owner.startswith(f"{r.address[victim]}:"):
                    return False
                host, port = owner.rsplit(":", 1)
                with r.client(host, int(port)) as c:
                    if not c.set(key, "1", ex=300):
                        return False
            return True

        t_kill = self.containers.kill(victim)
        self.pending[victim] = lambda: self.containers.start(victim)
        self.pending[PLACEMENT] = self._restore_placement
        ok_at = _when(recovered, timeout=3 * target)
        took = None if ok_at is None else ok_at - t_kill
        self.note(
            f"REDIS CLUSTER: {victim} killed with master(s) {sorted(lost)}; cluster ok on the "
            "surviving instances and their slots writable on a promoted replica after "
            + (f"{took:.1f} s" if took is not None else f"more than {3 * target:g} s")
            + f" ({_verdict(took, target)}, bound {2 * target:g} s)"
        )
        self.check(took is not None and took <= 2 * target, f"cluster ok again after {took} s")

        t_start = time.monotonic()
        self.containers.start(victim, timeout=HOST_BACK_TIMEOUT)

        def rejoined() -> bool:
            views = [r.nodes(a, p) for a, p in r.instances()]  # every instance answers
            return all(
                len(view) == len(r.instances())
                and not any("fail" in n["flags"] for n in view.values())
                for view in views
            ) and all(r.state_ok(a, p) for a, p in r.instances())

        back_at = _when(rejoined, timeout=HOST_BACK_TIMEOUT, interval=1.0)
        nodes = r.nodes(*r.instances()[0]) if back_at else {}
        before = r.placement(nodes, list(r.address.values())) if back_at else (False, False)
        helper = self._restore_placement()
        if back_at and helper.returncode == 0:
            self.pending.pop(victim)
            self.pending.pop(PLACEMENT)
        nodes = r.nodes(*r.instances()[0])
        after = r.placement(nodes, list(r.address.values()))
        self.note(
            f"REDIS CLUSTER: {victim} started again; its instances back in the cluster "
            + (f"{back_at - t_start:.1f} s later" if back_at else f"not in {HOST_BACK_TIMEOUT} s")
            + f" (one master per host: {before[0]}, replicas off their masters' hosts: "
            f"{before[1]}); redis-cluster-create: "
            f"{(helper.stdout.strip().splitlines() or [helper.stderr.strip()])[-1][:300]}; "
            f"after it: one master per host {after[0]}, anti-affinity {after[1]}, "
            f"{len(r.masters(nodes))} masters of {len(nodes)} instances"
        )
        self.check(back_at is not None, f"{victim}'s instances did not rejoin the cluster")
        self.check(helper.returncode == 0, f"redis-cluster-create failed: {helper.stderr[-500:]}")
        self.check(all(after), f"placement after recovery: {after}")

    def _restore_placement(self):
        """The role's helper, as the runbook says, from the first Redis host: gives a master
        back to a host that has none and moves replicas off their masters' hosts."""
        host_vars = self.redis.first
        argv = [
            f"{host_vars['redis_cluster_lib_dir']}/redis-cluster-create",
            *([] if host_vars["redis_cluster_anti_affinity"] else ["--no-anti-affinity"]),
            str(host_vars["redis_cluster_wait_timeout"]),
            *(str(p) for p in host_vars["redis_cluster_ports"]),
            *host_vars["redis_cluster_addresses"],
        ]
        return lab2.ssh(
            host_vars, shlex.join(argv), timeout=int(host_vars["redis_cluster_wait_timeout"]) * 3
        )

    # -- the queue Redis primary ----------------------------------------------------------------
    def queue_primary_killed(self) -> None:
        r = self.redis
        target = float(r.first["queue_redis_recovery_seconds"])
        members = len(r.names) - 1
        wait_whole = (
            f"{r.first['queue_redis_lib_dir']}/queue-redis-wait 90 {r.sentinel_port} "
            f"{r.master_name} {members} {members}"
        )
        # Whole before the kill (the Redis host killed before may still be catching up).
        ready = lab2.ssh(r.first, wait_whole, timeout=120)
        assert ready.returncode == 0, f"the queue Redis is not whole: {ready.stdout}{ready.stderr}"
        old = lab2.wait_for(r.agreed_primary, timeout=60, interval=1)
        assert old, f"the Sentinels do not agree on a primary: {r.sentinel_primaries()}"
        victim = next(n for n in r.names if r.queue_address[n] == old[0])
        host_vars = self.lab.hosts[victim]
        # SIGKILL, then keep it down: the unit's Restart=always would bring it back within
        # 100 ms, long before Sentinel's down-after, and no failover would happen.
        kill = lab2.ssh(
            host_vars,
            f"pid=$(systemctl show -p MainPID --value {QUEUE_UNIT}); "
            f'[ "$pid" -gt 0 ] && kill -9 "$pid" && systemctl stop {QUEUE_UNIT} '
            '&& echo "killed $pid"',
            timeout=30,
        )
        t_kill = time.monotonic()
        self.pending[QUEUE_UNIT] = lambda: lab2.ssh(
            host_vars, f"systemctl start {QUEUE_UNIT}", timeout=60
        )
        assert kill.returncode == 0 and "killed" in kill.stdout, (kill.stdout, kill.stderr)

        found: dict[str, tuple[str, int]] = {}

        def promoted() -> bool:
            new = r.agreed_primary()
            if new and new != old:
                found["new"] = new
            return bool(found)

        new_at = _when(promoted, timeout=4 * target)
        new = found.get("new")
        took = None if new_at is None else new_at - t_kill
        started = lab2.ssh(host_vars, f"systemctl start {QUEUE_UNIT}", timeout=60)
        whole = lab2.ssh(host_vars, wait_whole, timeout=120)
        if started.returncode == 0 and whole.returncode == 0:
            self.pending.pop(QUEUE_UNIT)
        self.note(
            f"QUEUE REDIS: primary {victim} ({old[0]}:{old[1]}) killed with SIGKILL "
            f"({kill.stdout.strip()}); the Sentinels agreed on "
            + (
                f"{r.name_of.get(new[0], new[0])} ({new[0]}:{new[1]}) after {took:.1f} s"
                if new and took is not None
                else f"no new primary within {4 * target:g} s"
            )
            + f" ({_verdict(took, target)}, bound {2 * target:g} s); {QUEUE_UNIT} started "
            f"again: {(whole.stdout.strip().splitlines() or [whole.stderr.strip()])[-1][:200]}"
        )
        self.check(took is not None and took <= 2 * target, f"queue primary after {took} s")
        self.check(whole.returncode == 0, f"the queue Redis is not whole again: {whole.stdout}")

    # -- HAProxy reloaded -----------------------------------------------------------------------
    def haproxy_reloaded(self, times: int = 2, pause: float = 2.0) -> None:
        def quiet() -> bool:
            recent = self.telegram.during(time.monotonic() - 3.0, time.monotonic())
            return self.all_app_nodes_up() and not self.telegram.failed(recent)

        calm = lab2.wait_for(quiet, timeout=60, interval=0.5)
        start = time.monotonic()
        codes = []
        for _ in range(times):
            codes.append(self.haproxy.reload().returncode)
            time.sleep(pause)
        end = time.monotonic()
        attempts = self.telegram.during(start, end)
        failed = self.telegram.failed(attempts)
        self.note(
            f"HAPROXY RELOAD: {times} reloads (exit {codes}) in {end - start:.1f} s "
            f"{'after a quiet spell' if calm else 'WITHOUT a quiet spell before'}: "
            f"{len(failed)} of {len(attempts)} requests in flight failed "
            f"({self.telegram.summary(failed)})"
        )
        self.check(codes == [0] * times, f"systemctl reload haproxy exited {codes}")
        self.check(bool(attempts), "no request was in flight during the reloads")
        self.check(not failed, f"{len(failed)} requests failed during the reloads")

    def restore(self) -> None:
        """Start again whatever a fault left stopped (each bounded; every error printed)."""
        for what, start in list(self.pending.items()):  # in order: a host before its placement
            try:
                done = start()
                print(f"RESTORED: {what}: {getattr(done, 'stdout', done)!s:.300}")
            except Exception as exc:  # noqa: BLE001 - restore the rest whatever one did
                print(f"RESTORE FAILED: {what}: {type(exc).__name__}: {exc}")
                self.problems.append(f"{what} could not be restored: {exc}")
