"""Run many scenarios in parallel lanes and print the figures.

    cd app && PYTHONPATH=src ../.venv/bin/python -m faults.runner --scenarios 300 --seed 1

Each lane is a process with its own Redis database (on a redis-server this suite starts on a
port in FAULT_REDIS_PORT.., default 17200), its own PostgreSQL schemas and SQLite files, and its
own in-process fake Telegram. Scenarios are handed out one at a time; results come back as data.
"""

from __future__ import annotations

import argparse
import importlib.util
import multiprocessing as mp
import os
import queue
import sys
import tempfile
import time
import traceback
from collections import Counter
from dataclasses import dataclass, field

from faults.lane import ROOT, Lane, RedisServer, RunSchemas, new_run_id
from faults.scenario import KINDS, generate

DEFAULT_SCENARIOS = 200
DEFAULT_SEED = 20261130
DEFAULT_LANES = 14


def expected_cost(scenario) -> int:
    """A rough rank of how long a scenario runs, so the long ones start first and do not make
    the tail of the run (a Redis outage in a worker pass waits out RQ's reconnect backoff)."""
    cost = len(scenario.actions)
    for action in scenario.actions:
        for fault in action.faults:
            if fault.kind == "worker_kill":
                cost += 30
            elif fault.kind.startswith("redis_") and action.op in ("drain", "later"):
                cost += 4 * fault.params.get("count", 1)
    return cost


def load_fake_telegram():
    """The fake Telegram module, loaded from its file (it is a standalone tool, not a package,
    whose folder holds the modules it imports: webhook_delivery)."""
    path = ROOT / "tools" / "fake_telegram" / "fake_telegram.py"
    if str(path.parent) not in sys.path:
        sys.path.insert(0, str(path.parent))
    spec = importlib.util.spec_from_file_location("fake_telegram", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _lane_main(index: int, run_id: str, redis_url: str, kinds: tuple, todo, results) -> None:
    from faults.driver import ScenarioRun
    from faults.inject import CommitLoss, RedisFaults
    from faults.invariants import Violation, check, inbound_rows, outbox_rows
    from grimbots import db as db_module
    from grimbots import redis_pool, telegram
    from grimbots.app import create_app

    # The app's logs (job failures the faults cause) go to a per-lane file, not the terminal.
    log_dir = os.environ.get("FAULT_LOG_DIR") or os.path.join(
        tempfile.gettempdir(), "grimbots-faults-logs"
    )
    os.makedirs(log_dir, exist_ok=True)
    log_file = open(os.path.join(log_dir, f"lane{index}.log"), "a")  # noqa: SIM115
    os.dup2(log_file.fileno(), 2)
    lane = Lane(index, redis_url, run_id)
    lane.prepare()
    fake = load_fake_telegram().FakeTelegram(host="127.0.0.1", port=0).start()
    settings = lane.settings("postgres", fake.base_url, False)
    redis_pool.get_pools(settings)
    telegram.get_client(settings)
    app = create_app(settings)
    redis_faults, commit_loss = RedisFaults(), CommitLoss()
    redis_faults.install()
    try:
        while True:
            item = todo.get()
            if item is None:
                break
            seed, i = item
            scenario = generate(seed, i, kinds)
            started = time.monotonic()
            run = ScenarioRun(lane, fake, app, redis_faults, commit_loss, scenario)
            violations: list = []
            calls: list = []
            recovery = 0.0
            try:
                run.setup()
                run.run()
                recovery = run.recover()
                observed = run.observe()
                tokens = {obs.token for obs in observed}
                calls = [c for c in fake.calls() if c["token"] in tokens]
                run.count_telegram_faults(calls)
                for obs in observed:
                    violations += check(obs, calls, run.hdb)
                for obs in observed if violations else ():
                    rows = outbox_rows(obs, run.hdb)
                    rows = [r for r in rows if not r.startswith("campaign:")]
                    run.notes += [f"outbox: {r}" for r in rows[:40]]
                    run.notes += [f"inbound: {row}" for row in inbound_rows(obs, run.hdb)[:40]]
                    run.notes += run.job_notes()
                    run.notes += [
                        f"update {u.update_id} ({u.kind}, lead {u.lead}) answered {u.answers}"
                        f" {[d for d in u.duplicate if d] or ''}"
                        for u in run.updates
                    ]
                    run.notes += [
                        f"payment {pid} webhook answered {p['answers']}"
                        for pid, p in run.payment_posts.items()
                    ]
            except Exception:
                violations = [Violation("scenario crashed", traceback.format_exc()[-1500:])]
            finally:
                run.teardown()
            unique = list(dict.fromkeys(str(v) for v in violations))
            results.put(
                {
                    "name": scenario.name,
                    "index": i,
                    "kinds": scenario.kinds,
                    "backend": scenario.backend,
                    "fired": dict(run.fired),
                    "violations": unique,
                    "invariants": sorted({v.invariant for v in violations}),
                    "seconds": time.monotonic() - started,
                    "op_seconds": dict(run.op_seconds),
                    "recovery": recovery,
                    "notes": run.notes[-80:],
                    "description": scenario.describe() if violations else "",
                    "calls": call_log(calls) if violations and calls else [],
                    "crashes": run.worker_crashes,
                }
            )
    finally:
        redis_faults.uninstall()
        fake.stop()
        db_module.reset_db()
        redis_pool.reset_pools()
        lane.drop()


def call_log(calls: list[dict], limit: int = 120) -> list[str]:
    """What the fake Telegram saw, one line a call, for a failing scenario's report (a
    campaign's own sends are left out: there can be hundreds)."""
    if not calls:
        return []
    t0 = calls[0]["time"]
    lines = []
    leads = [c for c in calls if not str(c.get("chat_key") or "").startswith("5000")]
    for c in leads[:limit]:
        params = c.get("params") or {}
        body = str(params.get("text") or params.get("caption") or "")[:38].replace("\n", " ")
        delay = f" held {c['delay']:.1f}s" if c.get("delay") else ""
        lines.append(
            f"{c['time'] - t0:7.3f} {c['method']:<20} chat {c['chat_key']} {c['status']}{delay} "
            f"{body!r}"
        )
    return lines


@dataclass
class Summary:
    seed: int
    results: list[dict] = field(default_factory=list)
    seconds: float = 0.0
    lanes: int = 0

    @property
    def failed(self) -> list[dict]:
        return [r for r in self.results if r["violations"]]

    def drawn_fired(self) -> dict[str, tuple[int, int]]:
        """Per kind: scenarios it was drawn for, and scenarios in which it actually fired."""
        drawn: Counter = Counter()
        fired: Counter = Counter()
        for r in self.results:
            drawn.update(set(r["kinds"]))
            fired.update(k for k, n in r["fired"].items() if n)
        return {k: (drawn.get(k, 0), fired.get(k, 0)) for k in KINDS}

    def unfired(self) -> list[str]:
        """Kinds drawn but never fired across the run: the suite did not test them."""
        return [k for k, (drawn, fired) in self.drawn_fired().items() if drawn and not fired]

    def figures(self) -> str:
        fired: Counter = Counter()
        by_kind_failed: Counter = Counter()
        by_invariant: Counter = Counter()
        by_kind_run: Counter = Counter()
        for r in self.results:
            fired.update(r["fired"])
            for k in r["kinds"]:
                by_kind_run[k] += 1
                if r["violations"]:
                    by_kind_failed[k] += 1
            by_invariant.update(r["invariants"])
        backends = Counter(r["backend"] for r in self.results)
        times = sorted(r["seconds"] for r in self.results) or [0.0]
        slowest = times[-1]
        median = times[len(times) // 2]
        op_time: Counter = Counter()
        for r in self.results:
            op_time.update(r.get("op_seconds", {}))
        lines = [
            f"fault scenarios: {len(self.results)} run (seed {self.seed}, {self.lanes} lanes, "
            f"{self.seconds:.0f} s wall, scenario median {median:.1f} s, slowest {slowest:.1f} s; "
            + ", ".join(f"{b} {n}" for b, n in sorted(backends.items()))
            + ")",
            "faults injected by kind: " + ", ".join(f"{k} {fired.get(k, 0)}" for k in KINDS),
            "scenarios per kind drawn/fired: "
            + ", ".join(f"{k} {d}/{f}" for k, (d, f) in self.drawn_fired().items()),
            "scenarios per kind (failed): "
            + ", ".join(f"{k} {by_kind_run.get(k, 0)} ({by_kind_failed.get(k, 0)})" for k in KINDS),
            "slowest: "
            + ", ".join(
                f"#{r['index']} {r['seconds']:.0f} s ({'+'.join(r['kinds']) or '-'})"
                for r in sorted(self.results, key=lambda r: -r["seconds"])[:4]
            ),
            "lane seconds by step: " + ", ".join(f"{k} {v:.0f}" for k, v in op_time.most_common()),
            f"scenarios failing: {len(self.failed)}; invariants violated: "
            + (", ".join(f"{k} {n}" for k, n in by_invariant.most_common()) or "0"),
        ]
        return "\n".join(lines)

    def report(self, limit: int = 10, verbose: bool = False) -> str:
        out = []
        for r in sorted(self.failed, key=lambda r: r["index"])[:limit]:
            out.append(r["description"])
            out += [f"    VIOLATED {v}" for v in r["violations"][:8]]
            out += [f"    note: {n}" for n in r["notes"]]
            if verbose:
                out += [f"    | {line}" for line in r.get("calls", [])]
        return "\n".join(out)


def run(
    scenarios: int = DEFAULT_SCENARIOS,
    seed: int = DEFAULT_SEED,
    lanes: int = DEFAULT_LANES,
    kinds: tuple[str, ...] = KINDS,
    indexes: list[int] | None = None,
    timeout: float = 3600.0,
    progress: bool = True,
) -> Summary:
    """Run the scenarios; bounded by `timeout` seconds (lanes are killed past it)."""
    indexes = list(range(scenarios)) if indexes is None else indexes
    lanes = max(1, min(lanes, len(indexes)))
    run_id = new_run_id()
    schemas = RunSchemas(run_id)
    swept = schemas.sweep_stale()
    if swept and progress:
        print(f"  dropped {len(swept)} schemas of fault runs that crashed", flush=True)
    try:
        server = RedisServer()
    except BaseException:
        schemas.close()
        raise
    ctx = mp.get_context("spawn")
    todo, results = ctx.Queue(), ctx.Queue()
    for i in sorted(indexes, key=lambda i: -expected_cost(generate(seed, i, kinds))):
        todo.put((seed, i))
    for _ in range(lanes):
        todo.put(None)
    procs = [
        ctx.Process(
            target=_lane_main, args=(n, run_id, server.url(n), kinds, todo, results), daemon=True
        )
        for n in range(lanes)
    ]
    summary = Summary(seed=seed, lanes=lanes)
    started = time.monotonic()
    try:
        for p in procs:
            p.start()
        deadline = started + timeout
        while len(summary.results) < len(indexes) and time.monotonic() < deadline:
            try:
                summary.results.append(results.get(timeout=2.0))
                done = len(summary.results)
                if progress and (done % 25 == 0 or done == len(indexes)):
                    print(
                        f"  {done}/{len(indexes)} scenarios, {len(summary.failed)} failing, "
                        f"{time.monotonic() - started:.0f} s",
                        flush=True,
                    )
            except queue.Empty:
                if not any(p.is_alive() for p in procs):
                    break
    finally:
        for p in procs:
            p.join(timeout=30)
            if p.is_alive():
                p.kill()
                p.join(timeout=5)
        try:
            server.stop()
        finally:
            schemas.close()  # the lanes' schemas too, if a lane was killed before dropping them
    summary.seconds = time.monotonic() - started
    missing = len(indexes) - len(summary.results)
    if missing:
        summary.results.append(
            {
                "name": f"{missing} scenarios", "index": -1, "kinds": (), "backend": "-",
                "fired": {}, "violations": [f"{missing} scenarios did not finish in time"],
                "invariants": ["scenario did not finish"], "seconds": 0.0, "recovery": 0.0,
                "notes": [], "description": f"{missing} scenarios missing", "crashes": 0,
            }
        )  # fmt: skip
    return summary


def write_report(summary: Summary) -> str:
    """Every failing scenario, with the fake's call log, to FAULT_REPORT (for findings)."""
    path = os.environ.get("FAULT_REPORT") or os.path.join(
        tempfile.gettempdir(), "grimbots-faults-report.txt"
    )
    with open(path, "w") as out:
        out.write(summary.report(limit=len(summary.results), verbose=True) + "\n")
        out.write(summary.figures() + "\n")
    return path


def budget() -> float:
    """Seconds the whole run may take before lanes are killed (FAULT_TIMEOUT; default 1200):
    a hung scenario fails the run instead of hanging CI."""
    return float(os.environ.get("FAULT_TIMEOUT") or 1200)


def kinds_from_env(raw: str | None) -> tuple[str, ...]:
    if not raw:
        return KINDS
    if raw.strip() == "none":
        return ()  # the journeys alone, no fault
    chosen = tuple(k.strip() for k in raw.split(",") if k.strip())
    unknown = set(chosen) - set(KINDS)
    if unknown:
        raise SystemExit(f"FAULT_KINDS: unknown kinds {sorted(unknown)}; kinds are {KINDS}")
    return chosen


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--scenarios", type=int, default=int(os.environ.get("FAULT_SCENARIOS", DEFAULT_SCENARIOS))
    )
    parser.add_argument("--seed", type=int, default=int(os.environ.get("FAULT_SEED", DEFAULT_SEED)))
    parser.add_argument(
        "--lanes", type=int, default=int(os.environ.get("FAULT_LANES", DEFAULT_LANES))
    )
    parser.add_argument("--kinds", default=os.environ.get("FAULT_KINDS", ""), help="comma list")
    parser.add_argument("--only", type=int, action="append", help="run only this index (repeat)")
    parser.add_argument("--describe", action="store_true", help="print the scenarios, run none")
    parser.add_argument("--report", type=int, default=10, help="failing scenarios to print")
    parser.add_argument("--calls", action="store_true", help="print the fake's call log too")
    args = parser.parse_args(argv)
    kinds = kinds_from_env(args.kinds)
    indexes = args.only or list(range(args.scenarios))
    if args.describe:
        for i in indexes:
            print(generate(args.seed, i, kinds).describe())
        return 0
    summary = run(args.scenarios, args.seed, args.lanes, kinds, indexes, timeout=budget())
    write_report(summary)
    print(summary.report(args.report, verbose=args.calls))
    print(summary.figures())
    unfired = summary.unfired() if len(indexes) >= DEFAULT_SCENARIOS else []
    if unfired:
        print(f"drawn but never fired: {', '.join(unfired)}")
    return 1 if summary.failed or unfired else 0


if __name__ == "__main__":
    raise SystemExit(main())
