#!/usr/bin/env python3
"""Wall time of `sealbench run --all --preset NAME`, job by job, in a fresh reports folder so nothing
is reused (targets: smoke <= 10 min on the 2-core CPU, default <= 60 min).

Writes benchmarks/results/run_all_<preset>_<device>_<date>.json with each job's seconds, run folder,
torch threads and the 1-minute load before and after every job (a 2-core box slows down badly
when something else runs: read the load beside the time), and with `--estimate` the `--dry-run`
estimate of each job beside it.

    python benchmarks/run_all_timing.py --preset smoke --estimate
"""
from __future__ import annotations

import argparse
import datetime as dt
import json
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from sealbench.engine.models import set_threads  # noqa: E402
from sealbench.registry import all_preset  # noqa: E402
from sealbench.runner import run  # noqa: E402
from sealbench.store import device_name, machine_load, package_versions  # noqa: E402


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--preset", default="smoke")
    ap.add_argument("--reports", default=None, help="reports folder (default: a new temporary one)")
    ap.add_argument("--threads", default="auto")
    ap.add_argument("--estimate", action="store_true", help="also record each job's --dry-run estimate first")
    ap.add_argument("--out", default=None)
    args = ap.parse_args(argv)
    threads = set_threads(args.threads)
    reports = Path(args.reports or tempfile.mkdtemp(prefix=f"run-all-{args.preset}-"))
    _, jobs = all_preset(args.preset)
    jobs = [j.updated(reports_dir=str(reports)) for j in jobs]
    date = dt.date.today().isoformat()
    out = Path(args.out or REPO / "benchmarks" / "results" / f"run_all_{args.preset}_cpu_{date}.json")
    record = {"preset": args.preset, "reports": str(reports), "torch_threads": threads, "device": device_name("cpu"),
              "versions": package_versions(), "date": date, "jobs": [], "complete": False}
    say = lambda m: print(m, file=sys.stderr)  # noqa: E731
    start = time.perf_counter()
    for i, job in enumerate(jobs, 1):
        entry = {"job": i, "task": job.task, "protocol": job.protocol, "contenders": list(job.resolve().contenders)}
        if args.estimate:
            from sealbench.estimate import dry_run

            t = time.perf_counter()
            entry["estimate_s"] = round(dry_run(job, say)["total_s"], 1)
            entry["estimate_wall_s"] = round(time.perf_counter() - t, 1)  # the calibration, the first time
        before = machine_load()
        t = time.perf_counter()
        result = run(job, progress=False, say=say)
        entry.update(seconds=round(time.perf_counter() - t, 1), run_folder=result.folder.name,
                     failures=len(result.failures), load_before=before, load_after=machine_load())
        record["jobs"].append(entry)
        record["total_seconds"] = round(time.perf_counter() - start, 1)
        out.write_text(json.dumps(record, indent=2))  # partial results survive a timeout
        say(f"[job {i}/{len(jobs)}] {job.task} {job.protocol}: {entry['seconds'] / 60:.1f} min"
            + (f" (estimated {entry['estimate_s'] / 60:.1f})" if "estimate_s" in entry else ""))
    record["complete"] = True
    out.write_text(json.dumps(record, indent=2))
    print("| job | task | protocol | minutes | estimated | load 1m before -> after |\n|---|---|---|---|---|---|")
    for e in record["jobs"]:
        est = f"{e['estimate_s'] / 60:.1f}" if "estimate_s" in e else "–"
        print(f"| {e['job']} | {e['task']} | {e['protocol']} | {e['seconds'] / 60:.1f} | {est} | "
              f"{e['load_before']['loadavg_1m']} -> {e['load_after']['loadavg_1m']} |")
    print(f"\npreset {args.preset}: {record['total_seconds'] / 60:.1f} min, {threads} torch thread(s); written: {out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
