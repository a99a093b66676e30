"""Webhook intake through HAProxy (phase 3): HTTPS on the load balancer in front of the app nodes,
at a fixed offered rate, compared with HAProxy's own trivial answer and with one node direct.

usage: python bench/lab_bench.py                    # the lab: targets read from inventory/lab
       python bench/lab_bench.py --lb 127.0.0.1:8443 --direct 127.0.0.1:5061 \
           --ca-file /tmp/ca.crt --bot-id 1         # anything else (GRIMBOTS_BENCH_SECRET set)

Open loop: request i is due at start + i / rate and is sent then, whatever earlier requests are
doing; its latency runs from that due time to the last byte of the answer, so a slow answer or a
generator that falls behind shows in the figures (no coordinated omission). The generator is
one asyncio process (standard library only) with a bounded pool of keep-alive connections; the
send lag (actual send - due time) and the achieved send rate are printed so that a generator
bottleneck is visible, and the trivial path through HAProxy doubles as its check. Run as root
it raises its own priority (--generator-nice): it stands in for Telegram, which does not share the
targets' cores. The machine's CPU busy share during each phase is printed beside it.

Phases, in order (each a warm-up then a measured window at the same rate):
  lb-trivial      GET <ping path> answered by HAProxy itself (no app): generator + TLS + HAProxy
  lb-webhook      POST /webhook/telegram/<bot_id> through HAProxy to the app nodes (the goal)
  direct-webhook  the same POST to one app node over plain HTTP
then HAProxy's ceiling for the trivial answer: wrk (closed loop, as many requests as it can).

Every update is new (unique update_id from the start time, its own chat id), in the mix of
bench/webhook.lua: per 10 updates 5 /start, 3 free text, 2 offer callbacks.

Goal (issue 9): lb-webhook at 1,000 req/s offered answers >= 1,000 req/s, p99 < 50 ms, 0 errors.
The script reports whether each goal is met; it asserts no timing. Exit status: 0 measured
(goals met or not), 1 a setup error (target unreachable, no ping path, probe refused, ...).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import re
import shutil
import ssl
import subprocess
import sys
import tempfile
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
GOAL_RPS = 1000.0
GOAL_P99_MS = 50.0
MIX = ("start", "text", "start", "callback", "start", "text", "start", "callback", "start", "text")
IDLE_REUSE_S = 2.0  # an idle connection older than this is closed, not reused (Gunicorn: 5 s)
MAX_LAG_P99_MS = 5.0  # a send later than this after its due time means the generator fell behind
MAX_PHASE_REQUESTS = 200_000  # bounds every phase: rate x (warm-up + measured)


class SetupError(RuntimeError):
    """Something to fix before a measurement means anything; the message says what."""


@dataclass(frozen=True)
class Target:
    name: str
    host: str
    port: int
    tls: ssl.SSLContext | None
    method: str
    path: str
    headers: tuple[tuple[str, str], ...] = ()
    webhook: bool = False

    @property
    def url(self) -> str:
        return f"{'https' if self.tls else 'http'}://{self.host}:{self.port}{self.path}"


# ---------------------------------------------------------------------------- HTTP/1.1 client


@dataclass
class Conn:
    reader: asyncio.StreamReader
    writer: asyncio.StreamWriter
    last_used: float
    used: int = 0


class Pool:
    """Keep-alive connections to one target, at most `size` open; a request waits (and its wait
    counts in its latency) when all are busy."""

    def __init__(self, target: Target, size: int, timeout: float):
        self.target, self.size, self.timeout = target, size, timeout
        self.idle: list[Conn] = []
        self.open = 0
        self.waiters: list[asyncio.Future] = []
        self.opened = 0

    async def acquire(self) -> Conn:
        now = time.monotonic()
        while self.idle:
            conn = self.idle.pop()  # LIFO: the warmest connection first
            if now - conn.last_used < IDLE_REUSE_S and not conn.writer.is_closing():
                return conn
            self.discard(conn)
        if self.open < self.size:
            self.open += 1
            try:
                return await self._connect()
            except BaseException:
                self.open -= 1
                self._wake()
                raise
        fut = asyncio.get_running_loop().create_future()
        self.waiters.append(fut)
        try:
            return await fut
        except asyncio.CancelledError:  # timed out while waiting: hand a late conn back
            if fut.done() and not fut.cancelled() and fut.exception() is None:
                self.release(fut.result())
            raise

    async def _connect(self) -> Conn:
        t = self.target
        reader, writer = await asyncio.open_connection(
            t.host, t.port, ssl=t.tls, server_hostname=t.host if t.tls else None
        )
        self.opened += 1
        return Conn(reader, writer, time.monotonic())

    def release(self, conn: Conn) -> None:
        conn.last_used = time.monotonic()
        conn.used += 1
        while self.waiters:
            fut = self.waiters.pop(0)
            if not fut.done():
                fut.set_result(conn)
                return
        self.idle.append(conn)

    def discard(self, conn: Conn) -> None:
        self.open -= 1
        conn.writer.close()
        self._wake()

    def _wake(self) -> None:
        """A slot freed: the first waiter gets a new connection."""
        while self.waiters and self.open < self.size:
            fut = self.waiters.pop(0)
            if fut.done():
                continue
            self.open += 1

            async def hand(f: asyncio.Future = fut) -> None:
                try:
                    conn = await self._connect()
                except Exception as exc:  # the waiter records it as a connect error
                    self.open -= 1
                    if not f.done():
                        f.set_exception(exc)
                    return
                if f.done():
                    self.release(conn)
                else:
                    f.set_result(conn)

            asyncio.ensure_future(hand())
            return

    async def close(self) -> None:
        for conn in self.idle:
            conn.writer.close()
        self.idle.clear()


class StaleConnection(Exception):
    """The server had closed a kept-alive connection before answering (safe to send again)."""


async def _read_answer(conn: Conn) -> tuple[int, bool]:
    """Status of one HTTP/1.1 answer, its body read and dropped; and whether to keep the conn."""
    try:
        head = await conn.reader.readuntil(b"\r\n\r\n")
    except asyncio.IncompleteReadError as exc:
        if not exc.partial and conn.used:
            raise StaleConnection from exc
        raise
    lines = head.decode("latin-1").split("\r\n")
    status = int(lines[0].split(" ", 2)[1])
    length, chunked, keep = 0, False, True
    for line in lines[1:]:
        name, _, value = line.partition(":")
        name, value = name.strip().lower(), value.strip().lower()
        if name == "content-length":
            length = int(value)
        elif name == "transfer-encoding" and "chunked" in value:
            chunked = True
        elif name == "connection" and "close" in value:
            keep = False
    if chunked:
        for _ in range(10_000):  # bounded: answers here are a few small chunks
            size = int((await conn.reader.readuntil(b"\r\n")).split(b";")[0], 16)
            await conn.reader.readexactly(size + 2)
            if size == 0:
                break
    elif length:
        await conn.reader.readexactly(length)
    return status, keep


async def exchange(pool: Pool, request: bytes) -> int:
    """Send one request on a pooled connection; a kept-alive connection the server had already
    closed is replaced once."""
    for attempt in (0, 1):
        conn = await pool.acquire()
        try:
            conn.writer.write(request)
            status, keep = await _read_answer(conn)
        except StaleConnection:
            pool.discard(conn)
            if attempt:
                raise
            continue
        except BaseException:
            pool.discard(conn)
            raise
        if keep:
            pool.release(conn)
        else:
            pool.discard(conn)
        return status
    raise AssertionError("unreachable")


# ---------------------------------------------------------------------------- requests


class Updates:
    """Telegram updates, each new: ids from the run's start time (2^20 ids a second, below 2^53,
    so runs a second apart never share an update id while each sends fewer than 2^20)."""

    def __init__(self, offer_id: int):
        self.next_id = int(time.time()) * 2**20
        self.offer = offer_id

    def body(self) -> bytes:
        uid = self.next_id
        self.next_id += 1
        kind = MIX[uid % len(MIX)]
        now = int(time.time())
        sender = {"id": uid, "is_bot": False, "first_name": "Lead"}
        if kind == "callback":
            update = {
                "update_id": uid,
                "callback_query": {
                    "id": str(uid),
                    "from": sender,
                    "message": {
                        "message_id": 1,
                        "chat": {"id": uid, "type": "private"},
                        "date": now,
                    },
                    "chat_instance": str(uid),
                    "data": f"buy:{self.offer}",
                },
            }
        else:
            text = f"/start {uid:032d}" if kind == "start" else f"quanto custa? {uid}"
            update = {
                "update_id": uid,
                "message": {
                    "message_id": uid % 1_000_000 + 1,
                    "date": now,
                    "chat": {"id": uid, "type": "private"},
                    "from": sender,
                    "text": text,
                },
            }
        return json.dumps(update, separators=(",", ":")).encode()


def build_request(target: Target, updates: Updates | None) -> bytes:
    head = [f"{target.method} {target.path} HTTP/1.1", f"Host: {target.host}:{target.port}"]
    head += [f"{k}: {v}" for k, v in target.headers]
    body = updates.body() if target.webhook and updates else b""
    if target.method == "POST":
        head += ["Content-Type: application/json", f"Content-Length: {len(body)}"]
    return ("\r\n".join(head) + "\r\n\r\n").encode() + body


# ---------------------------------------------------------------------------- open loop


@dataclass
class Window:
    """What one measured window saw."""

    latencies_ms: list[float] = field(default_factory=list)
    lags_ms: list[float] = field(default_factory=list)
    errors: Counter = field(default_factory=Counter)
    statuses: Counter = field(default_factory=Counter)
    sent: int = 0
    first_send: float = 0.0
    last_send: float = 0.0


async def _one(pool: Pool, request: bytes, due: float, timeout: float, win: Window) -> None:
    start = time.monotonic()
    win.lags_ms.append((start - due) * 1000)
    win.sent += 1
    win.first_send = win.first_send or start
    win.last_send = start
    try:
        async with asyncio.timeout(max(0.001, due + timeout - start)):
            status = await exchange(pool, request)
    except TimeoutError:
        win.errors["timeout"] += 1
        return
    except (OSError, ssl.SSLError) as exc:
        win.errors[f"connect/io: {type(exc).__name__}"] += 1
        return
    except (asyncio.IncompleteReadError, StaleConnection, ValueError, IndexError):
        win.errors["read"] += 1
        return
    win.statuses[status] += 1
    if status == 200:
        win.latencies_ms.append((time.monotonic() - due) * 1000)
    else:
        win.errors[f"status {status}"] += 1


async def open_loop(
    pool: Pool, target: Target, updates: Updates | None, rate: float, seconds: float, timeout: float
) -> tuple[Window, float, float]:
    """Send rate x seconds requests on schedule; (window, wall seconds, generator CPU seconds)."""
    count = int(rate * seconds)
    if count > MAX_PHASE_REQUESTS:
        raise SetupError(f"{count} requests in one phase: lower --rate or --duration")
    win = Window()
    tasks: set[asyncio.Task] = set()
    cpu0, start = time.process_time(), time.monotonic() + 0.05
    for i in range(count):
        due = start + i / rate
        delay = due - time.monotonic()
        if delay > 0.0005:
            await asyncio.sleep(delay)
        task = asyncio.ensure_future(_one(pool, build_request(target, updates), due, timeout, win))
        tasks.add(task)
        task.add_done_callback(tasks.discard)
    if tasks:  # each request is bounded by its own timeout; this bound is a second guard
        await asyncio.wait(tasks, timeout=timeout + 5)
    return win, time.monotonic() - start, time.process_time() - cpu0


def pct(values: list[float], p: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(p / 100 * len(ordered)))]


def summarize(win: Window, rate: float, seconds: float, cpu_s: float, wall_s: float) -> dict:
    ok = len(win.latencies_ms)
    span = max(win.last_send - win.first_send, 1e-9)
    return {
        "offered_rps": rate,
        "requests": int(rate * seconds),
        "send_rps": round((win.sent - 1) / span, 1) if win.sent > 1 else 0.0,
        "ok_rps": round(ok / seconds, 1),
        "ok": ok,
        "errors": sum(win.errors.values()),
        "error_kinds": dict(win.errors),
        "statuses": {str(k): v for k, v in win.statuses.items()},
        "latency_ms": {
            "p50": round(pct(win.latencies_ms, 50), 2),
            "p90": round(pct(win.latencies_ms, 90), 2),
            "p99": round(pct(win.latencies_ms, 99), 2),
            "max": round(max(win.latencies_ms, default=float("nan")), 2),
        },
        "send_lag_ms": {
            "p50": round(pct(win.lags_ms, 50), 2),
            "p99": round(pct(win.lags_ms, 99), 2),
            "max": round(max(win.lags_ms, default=float("nan")), 2),
        },
        "generator_cpu_pct": round(100 * cpu_s / max(wall_s, 1e-9), 1),
    }


async def run_phase(target: Target, args, updates: Updates | None) -> dict:
    pool = Pool(target, args.connections, args.timeout)
    try:
        if args.warmup > 0:
            await open_loop(pool, target, updates, args.rate, args.warmup, args.timeout)
        before = cpu_times()
        win, wall, cpu = await open_loop(
            pool, target, updates, args.rate, args.duration, args.timeout
        )
        host_busy = cpu_busy_pct(before, cpu_times())
    finally:
        await pool.close()
    result = summarize(win, args.rate, args.duration, cpu, wall)
    result["host_cpu_busy_pct"] = host_busy
    result["connections_opened"] = pool.opened
    return result


# ---------------------------------------------------------------------------- setup


def probe(target: Target, updates: Updates | None, timeout: float = 5) -> int:
    """One request, outside the timed loop: the status, or SetupError when nothing answers."""

    async def go() -> int:
        pool = Pool(target, 1, timeout)
        try:
            async with asyncio.timeout(timeout):
                return await exchange(pool, build_request(target, updates))
        finally:
            await pool.close()

    try:
        return asyncio.run(go())
    except (OSError, ssl.SSLError, TimeoutError, asyncio.IncompleteReadError) as exc:
        raise SetupError(f"{target.url}: no answer ({type(exc).__name__}: {exc})") from exc


def tls_context(ca_file: str) -> ssl.SSLContext:
    try:
        context = ssl.create_default_context(cafile=ca_file)
    except (OSError, ssl.SSLError) as exc:
        raise SetupError(f"{ca_file} is not a usable CA certificate: {exc}") from exc
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    context.set_alpn_protocols(["http/1.1"])
    return context


def host_port(value: str, what: str) -> tuple[str, int]:
    host, sep, port = value.rpartition(":")
    if not sep or not port.isdigit():
        raise SetupError(f"{what} must be HOST:PORT, got {value!r}")
    return host, int(port)


def lab_defaults(args, work: Path) -> dict:
    """Whatever was not given on the command line, from the lab inventory: the lb host and its
    HTTPS port, the first app node, the lab CA (read over SSH from the lb) and the demo bot
    (seeded, idempotently, over SSH on the first app node)."""
    import grimbots_lab as lab2

    lab = lab2.load_lab()
    lb = lab.hosts[lab.groups["lb"][0]]
    ports = lb["platform_ports"]
    app = lab.hosts[lab.groups["app"][0]]
    found: dict = {}
    if not args.lb:
        found["lb"] = f"{lb['ansible_host']}:{ports['haproxy_https']}"
    if not args.direct:
        found["direct"] = f"{app['ansible_host']}:{ports['app_web']}"
    if not args.ca_file:
        ca = lab2.ssh(lb, "cat /etc/haproxy/certs/ca.crt", timeout=30)
        if ca.returncode != 0 or "BEGIN CERTIFICATE" not in ca.stdout:
            raise SetupError(f"no lab CA from the lb host: {ca.stderr.strip()[-500:]}")
        path = work / "ca.crt"
        path.write_text(ca.stdout)
        found["ca_file"] = str(path)
    if args.bot_id is None:
        seed = lab2.ssh(app, "/usr/local/bin/grimbots-manage seed-demo", timeout=120)
        if seed.returncode != 0 or "{" not in seed.stdout:
            raise SetupError(f"seed-demo on the app node failed: {seed.stderr.strip()[-500:]}")
        data = json.loads(seed.stdout[seed.stdout.index("{") :])
        found["bot_id"] = int(data["bot_id"])
        found["secret"] = data["webhook_secret"]
        found["offer_id"] = int((data.get("offer_ids") or [1])[0])
    return found


def wrk_ceiling(target: Target, seconds: int, connections: int) -> dict:
    """HAProxy's ceiling for its own answer: wrk, closed loop, as fast as answers come back."""
    wrk = shutil.which("wrk")
    if not wrk:
        return {"skipped": "wrk is not installed (Debian package wrk)"}
    cmd = [wrk, "-t", "2", "-c", str(connections), "-d", f"{seconds}s", "--timeout", "5s"]
    run = subprocess.run(
        [*cmd, "--latency", target.url], capture_output=True, text=True, timeout=seconds + 60
    )
    if run.returncode != 0:
        raise SetupError(f"wrk failed on {target.url}: {run.stderr.strip()[-500:]}")
    out = run.stdout

    def grab(pattern: str, default: str = "0") -> str:
        m = re.search(pattern, out)
        return m.group(1) if m else default

    def ms(value: str) -> float:
        m = re.fullmatch(r"([\d.]+)(us|ms|s)", value)
        if not m:
            return float("nan")
        return float(m.group(1)) * {"us": 0.001, "ms": 1.0, "s": 1000.0}[m.group(2)]

    socket_errors = sum(int(n) for n in re.findall(r"(?:connect|read|write|timeout) (\d+)", out))
    return {
        "rps": float(grab(r"Requests/sec:\s+([\d.]+)")),
        "p50_ms": ms(grab(r"\n\s+50%\s+(\S+)", "nan")),
        "p99_ms": ms(grab(r"\n\s+99%\s+(\S+)", "nan")),
        "errors": int(grab(r"Non-2xx or 3xx responses: (\d+)")) + socket_errors,
        "connections": connections,
        "seconds": seconds,
    }


# ---------------------------------------------------------------------------- report


def ratio(a: float, b: float) -> float | None:
    return round(a / b, 3) if b and a == a and b == b else None


def report(results: dict, ceiling: dict, args) -> dict:
    lbw, lbt, direct = (results.get(k) for k in ("lb-webhook", "lb-trivial", "direct-webhook"))
    print()
    print(
        f"through HAProxy: offered {args.rate:.0f} req/s (open loop), {args.duration:.0f} s "
        f"measured after {args.warmup:.0f} s warm-up, up to {args.connections} connections"
    )
    print(
        f"{'phase':<15} {'sent/s':>8} {'ok/s':>8} {'p50 ms':>8} {'p99 ms':>8} {'max ms':>8} "
        f"{'errors':>7} {'lag p99':>8} {'gen CPU':>8} {'host CPU':>9}"
    )
    for name, r in results.items():
        lat, lag = r["latency_ms"], r["send_lag_ms"]
        print(
            f"{name:<15} {r['send_rps']:>8.1f} {r['ok_rps']:>8.1f} {lat['p50']:>8.2f} "
            f"{lat['p99']:>8.2f} {lat['max']:>8.2f} {r['errors']:>7} {lag['p99']:>8.2f} "
            f"{r['generator_cpu_pct']:>7.0f}% {r['host_cpu_busy_pct']:>8}%"
        )
        if r["errors"]:
            print(f"{'':<15} errors: {r['error_kinds']}")
    if "rps" in ceiling:
        print(
            f"{'lb-trivial max':<15} {ceiling['rps']:>8.1f} req/s closed loop (wrk, "
            f"{ceiling['connections']} connections): p50 {ceiling['p50_ms']:.2f} ms, "
            f"p99 {ceiling['p99_ms']:.2f} ms, errors {ceiling['errors']}"
        )
    elif ceiling:
        print(f"lb-trivial max: {ceiling.get('skipped')}")

    ratios = {}
    if lbw and lbt:
        ratios["lb_webhook_p99_over_lb_trivial_p99"] = ratio(
            lbw["latency_ms"]["p99"], lbt["latency_ms"]["p99"]
        )
    if lbw and direct:
        ratios["lb_webhook_p99_over_direct_p99"] = ratio(
            lbw["latency_ms"]["p99"], direct["latency_ms"]["p99"]
        )
        ratios["lb_webhook_ok_rps_over_direct_ok_rps"] = ratio(lbw["ok_rps"], direct["ok_rps"])
    if "rps" in ceiling:  # how far HAProxy alone is from its limit at the offered load
        ratios["lb_trivial_ceiling_over_offered"] = ratio(ceiling["rps"], args.rate)
    if ratios:
        print("ratios: " + ", ".join(f"{k} {v}" for k, v in ratios.items()))

    # The generator kept its schedule in a phase if it sent at the offered rate with little
    # lag. On the trivial path (nothing behind HAProxy) that is the generator's own check; in a
    # webhook phase a lag means the machine had no CPU left for it either: the latencies include
    # that wait, as an open loop must count it.
    kept = {
        name: r["send_rps"] >= 0.98 * args.rate and r["send_lag_ms"]["p99"] < MAX_LAG_P99_MS
        for name, r in results.items()
    }
    for name, ok in kept.items():
        r = results[name]
        print(
            f"generator in {name}: sent {r['send_rps']:.0f}/s of {args.rate:.0f} offered, send lag "
            f"p99 {r['send_lag_ms']['p99']:.2f} ms: "
            + ("kept its schedule" if ok else "BEHIND SCHEDULE (no CPU free for it: see host CPU)")
        )
    goals = {}
    if lbw:
        goals = {
            f"ok >= {GOAL_RPS:.0f} req/s": lbw["ok_rps"] >= GOAL_RPS - 0.5,
            f"p99 < {GOAL_P99_MS:.0f} ms": lbw["latency_ms"]["p99"] < GOAL_P99_MS,
            "0 errors": lbw["errors"] == 0,
        }
        print(
            "goals (lb-webhook): "
            + ", ".join(f"{k}: {'met' if v else 'MISSED'}" for k, v in goals.items())
        )
    return {"ratios": ratios, "generator_kept_schedule": kept, "goals_met": goals}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--lb", help="HAProxy HTTPS HOST:PORT (default: the lab's lb, inventory)")
    ap.add_argument("--direct", help="one app node HOST:PORT, plain HTTP (default: lab app1)")
    ap.add_argument("--ca-file", help="CA that signed the lb certificate (default: lab CA)")
    ap.add_argument(
        "--bot-id",
        type=int,
        help="bot to post to; secret from the environment "
        "GRIMBOTS_BENCH_SECRET (default: seed-demo on the lab's first app node)",
    )
    ap.add_argument("--offer-id", type=int, default=1, help="offer in the callback updates")
    ap.add_argument("--ping-path", default="/_lb/ping", help="path HAProxy answers itself")
    ap.add_argument("--rate", type=float, default=GOAL_RPS, help="offered requests/s")
    ap.add_argument("--duration", type=float, default=20, help="measured seconds per phase")
    ap.add_argument("--warmup", type=float, default=5, help="warm-up seconds per phase")
    ap.add_argument(
        "--connections",
        type=int,
        default=40,
        help="most connections per phase (40: Telegram's default webhook max_connections)",
    )
    ap.add_argument(
        "--generator-nice",
        type=int,
        default=-10,
        help="nice value for the generator when run as root, so that it keeps its schedule on "
        "a machine it shares with the targets (0: leave it)",
    )
    ap.add_argument("--timeout", type=float, default=5, help="seconds a request may take")
    ap.add_argument(
        "--ceiling-seconds",
        type=int,
        default=10,
        help="wrk run on the ping path for HAProxy's ceiling (0: skip)",
    )
    ap.add_argument("--ceiling-connections", type=int, default=32)
    ap.add_argument(
        "--phases",
        default="lb-trivial,lb-webhook,direct-webhook",
        help="which open-loop phases, comma-separated, in this order",
    )
    ap.add_argument("--report", help="JSON report (default bench/results/lab-<time>.json)")
    args = ap.parse_args(argv)

    phases = [p for p in args.phases.split(",") if p]
    bad = set(phases) - {"lb-trivial", "lb-webhook", "direct-webhook"}
    checks = [
        (not bad, f"unknown phase(s): {sorted(bad)}"),
        (0 < args.rate <= 20_000, "--rate must be in (0, 20000]"),
        (0 < args.duration <= 600 and 0 <= args.warmup <= 120, "--duration 0-600, --warmup 0-120"),
        (1 <= args.connections <= 1000, "--connections must be 1..1000"),
        (0 <= args.ceiling_seconds <= 120, "--ceiling-seconds must be 0..120"),
        (0 < args.timeout <= 60, "--timeout must be in (0, 60]"),
    ]
    for ok, message in checks:
        if not ok:
            print(f"lab_bench: {message}", file=sys.stderr)
            return 1

    with tempfile.TemporaryDirectory(prefix="grimbots-labbench.") as tmp:
        try:
            return _run(args, phases, Path(tmp))
        except SetupError as exc:
            print(f"lab_bench: setup error: {exc}", file=sys.stderr)
            return 1


def cpu_times() -> list[int]:
    """The machine's CPU times (/proc/stat: user .. steal), empty where unknown."""
    try:
        with open("/proc/stat") as f:
            return [int(x) for x in f.readline().split()[1:9]]
    except (OSError, ValueError):
        return []


def cpu_busy_pct(a: list[int], b: list[int]) -> int:
    """Percent of the machine's CPU time busy between two cpu_times(), -1 where unknown."""
    total = sum(b) - sum(a) if a and b else 0
    return round(100 - 100 * (b[3] + b[4] - a[3] - a[4]) / total) if total > 0 else -1


def _run(args, phases: list[str], work: Path) -> int:
    given = {"lb": args.lb, "direct": args.direct, "ca_file": args.ca_file}
    secret = os.environ.get("GRIMBOTS_BENCH_SECRET", "")
    offer = args.offer_id
    found: dict = {}
    if args.bot_id is not None and not secret:
        raise SetupError("--bot-id needs the bot's webhook secret in GRIMBOTS_BENCH_SECRET")
    if not all(given.values()) or args.bot_id is None:
        print("lab_bench: reading the lab inventory for what was not given")
        found = lab_defaults(args, work)
        given.update({k: v for k, v in found.items() if k in given})
        secret = found.get("secret", secret)
        offer = found.get("offer_id", offer)
    bot_id = args.bot_id if args.bot_id is not None else found["bot_id"]
    if not Path(given["ca_file"]).is_file():
        raise SetupError(f"no CA file at {given['ca_file']}")

    lb_host, lb_port = host_port(given["lb"], "--lb")
    d_host, d_port = host_port(given["direct"], "--direct")
    tls = tls_context(given["ca_file"])
    secret_header = (("X-Telegram-Bot-Api-Secret-Token", secret),)
    hook = f"/webhook/telegram/{bot_id}"
    targets = {
        "lb-trivial": Target("lb-trivial", lb_host, lb_port, tls, "GET", args.ping_path),
        "lb-webhook": Target(
            "lb-webhook", lb_host, lb_port, tls, "POST", hook, secret_header, True
        ),
        "direct-webhook": Target(
            "direct-webhook", d_host, d_port, None, "POST", hook, secret_header, True
        ),
    }
    updates = Updates(offer)

    # Probes: every target answers as expected before anything is timed.
    status = probe(targets["lb-trivial"], None)
    if status != 200:
        why = "no such route, the app answered" if status == 404 else "see the lb config"
        raise SetupError(
            f"{targets['lb-trivial'].url} answered {status}, not 200: HAProxy gives no trivial "
            f"answer on {args.ping_path} ({why}). Add to the https frontend of "
            "roles/haproxy/templates/haproxy.cfg.j2: `http-request return status 200 "
            f"content-type text/plain string ok if {{ path {args.ping_path} }}`"
        )
    for name in ("lb-webhook", "direct-webhook"):
        status = probe(targets[name], updates)
        if status != 200:
            raise SetupError(f"{targets[name].url}: the webhook probe answered {status}, not 200")
    print(f"lab_bench: lb {targets['lb-trivial'].url}, direct {d_host}:{d_port}, bot {bot_id}")

    if args.generator_nice and os.geteuid() == 0:
        os.setpriority(os.PRIO_PROCESS, 0, args.generator_nice)
    before = cpu_times()
    time.sleep(2)
    busy = cpu_busy_pct(before, cpu_times())
    idle = 100 - busy if busy >= 0 else -1
    load1, load5, _ = os.getloadavg()
    print(f"lab_bench: CPU {idle}% idle before the run, load average {load1:.2f}")
    if 0 <= idle < 85:
        print("lab_bench: WARNING: other work competes on this machine, figures will be low")

    results: dict[str, dict] = {}
    for name in phases:
        print(
            f"lab_bench: {name}: {args.warmup:.0f} s warm-up + {args.duration:.0f} s "
            f"at {args.rate:.0f} req/s"
        )
        results[name] = asyncio.run(
            run_phase(targets[name], args, updates if targets[name].webhook else None)
        )
    ceiling: dict = {}
    if args.ceiling_seconds:
        print(f"lab_bench: lb-trivial ceiling: wrk {args.ceiling_seconds} s closed loop")
        ceiling = wrk_ceiling(targets["lb-trivial"], args.ceiling_seconds, args.ceiling_connections)
    verdict = report(results, ceiling, args)

    path = (
        Path(args.report)
        if args.report
        else (
            ROOT
            / "bench"
            / "results"
            / f"lab-{time.strftime('%Y%m%dT%H%M%SZ', time.gmtime())}.json"
        )
    )
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(
        json.dumps(
            {
                "started_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
                "command": " ".join(["python", "bench/lab_bench.py", *sys.argv[1:]]),
                "machine": {
                    "nproc": os.cpu_count(),
                    "loadavg_at_start": [load1, load5],
                    "cpu_idle_pct_at_start": idle,
                    "generator_nice": os.getpriority(os.PRIO_PROCESS, 0),
                },
                "config": {
                    "lb": given["lb"],
                    "direct": given["direct"],
                    "bot_id": bot_id,
                    "rate": args.rate,
                    "duration_s": args.duration,
                    "warmup_s": args.warmup,
                    "connections": args.connections,
                    "ping_path": args.ping_path,
                },
                "phases": results,
                "lb_trivial_ceiling": ceiling,
                **verdict,
            },
            indent=2,
        )
        + "\n"
    )
    print(f"report: {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
