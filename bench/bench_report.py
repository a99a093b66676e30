"""Turn the wrk results of one benchmark invocation into a summary and a JSON report.

usage: python3 bench_report.py <work dir> <report path>

The work dir holds `meta.json` (configuration and machine facts written by webhook_bench.sh) and
`run<N>-<target>.json` (wrk's done() output) plus `run<N>-enqueued.txt` (jobs the app queued
during the measured phase). Exit status 0 when every target is met on the median run, 2 if not.
"""

from __future__ import annotations

import json
import statistics
import sys
from pathlib import Path

TARGET_RPS = 1500.0
TARGET_P99_MS = 20.0
TARGET_RATIO = 0.6


def _load(path: Path) -> dict | None:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None


def _errors(result: dict) -> int:
    return sum(result["errors"].values())


def main(work: Path, report_path: Path) -> int:
    meta = json.loads((work / "meta.json").read_text())
    runs = []
    for n in range(1, int(meta["config"]["runs"]) + 1):
        webhook = _load(work / f"run{n}-webhook.json")
        trivial = _load(work / f"run{n}-trivial.json")
        if webhook is None or trivial is None:
            continue
        enqueued_file = work / f"run{n}-enqueued.txt"
        enqueued = int(enqueued_file.read_text().strip() or 0) if enqueued_file.exists() else None
        runs.append(
            {
                "run": n,
                "webhook": webhook,
                "trivial": trivial,
                "ratio": round(webhook["rps"] / trivial["rps"], 3) if trivial["rps"] else 0.0,
                # Jobs the webhook enqueued while wrk measured: proves the requests did real work
                # (a duplicate answer or an error enqueues nothing). wrk stops mid-request, so a
                # handful of answers may be counted by one side only.
                "webhook_jobs_enqueued": enqueued,
            }
        )
    if not runs:
        print("no complete run: see the wrk output above", file=sys.stderr)
        return 1

    def median(key, sub=None):
        values = [r[key][sub] if sub else r[key] for r in runs]
        return round(statistics.median(values), 3)

    summary = {
        "webhook_rps": median("webhook", "rps"),
        "webhook_p50_ms": round(
            statistics.median(r["webhook"]["latency_ms"]["p50"] for r in runs), 3
        ),
        "webhook_p99_ms": round(
            statistics.median(r["webhook"]["latency_ms"]["p99"] for r in runs), 3
        ),
        "trivial_rps": median("trivial", "rps"),
        "trivial_p50_ms": round(
            statistics.median(r["trivial"]["latency_ms"]["p50"] for r in runs), 3
        ),
        "trivial_p99_ms": round(
            statistics.median(r["trivial"]["latency_ms"]["p99"] for r in runs), 3
        ),
        "ratio": median("ratio"),
        "webhook_errors": sum(_errors(r["webhook"]) for r in runs),
        "trivial_errors": sum(_errors(r["trivial"]) for r in runs),
    }
    targets = {
        "rps >= 1500": summary["webhook_rps"] >= TARGET_RPS,
        "p99 < 20 ms": summary["webhook_p99_ms"] < TARGET_P99_MS,
        "ratio >= 0.6": summary["ratio"] >= TARGET_RATIO,
        "no errors": summary["webhook_errors"] == 0,
    }
    report = {**meta, "runs": runs, "median": summary, "targets_met": targets}
    report_path.parent.mkdir(parents=True, exist_ok=True)
    report_path.write_text(json.dumps(report, indent=2) + "\n")

    cfg = meta["config"]
    print()
    print(
        f"webhook intake benchmark: {cfg['workers']} workers x {cfg['threads']} threads (gthread), "
        f"wrk {cfg['wrk_threads']} threads / {cfg['connections']} connections, "
        f"{cfg['duration_s']} s measured after {cfg['warmup_s']} s warm-up, {len(runs)} run(s)"
    )
    machine = meta["machine"]
    print(
        f"machine: {machine['nproc']} CPUs, {machine['cpu_model']}, "
        f"load average at start {machine.get('loadavg_at_start')}, "
        f"CPU idle before the run {machine.get('cpu_idle_pct_at_start')}%"
    )
    print(f"{'run':>4} {'target':<8} {'req/s':>9} {'p50 ms':>8} {'p99 ms':>8} {'errors':>7}  ratio")
    for r in runs:
        for name in ("trivial", "webhook"):
            res = r[name]
            ratio = f"{r['ratio']:.3f}" if name == "webhook" else ""
            print(
                f"{r['run']:>4} {name:<8} {res['rps']:>9.1f} {res['latency_ms']['p50']:>8.2f} "
                f"{res['latency_ms']['p99']:>8.2f} {_errors(res):>7}  {ratio}"
            )
        if r["webhook_jobs_enqueued"] is not None:
            print(
                f"{'':>4} jobs enqueued by the webhook while measured: "
                f"{r['webhook_jobs_enqueued']} (wrk counted {r['webhook']['requests']} answers)"
            )
    med = summary
    print(
        f"median: webhook {med['webhook_rps']:.0f} req/s, p50 {med['webhook_p50_ms']:.2f} ms, "
        f"p99 {summary['webhook_p99_ms']:.2f} ms; trivial {summary['trivial_rps']:.0f} req/s; "
        f"ratio {summary['ratio']:.3f}"
    )
    print("targets: " + ", ".join(f"{k}: {'met' if v else 'MISSED'}" for k, v in targets.items()))
    print(f"report: {report_path}")
    return 0 if all(targets.values()) else 2


if __name__ == "__main__":
    sys.exit(main(Path(sys.argv[1]), Path(sys.argv[2])))
