#!/usr/bin/env python3
"""Wall time of `sealbench run --all --preset NAME` (issue targets: smoke <= 10 min, default <= 60 min
on the 2-core CPU), job by job, in a fresh reports folder so nothing is reused.

Prints a table and writes benchmarks/results/run_all_<preset>_<device>_<date>.json with each job's
seconds, the run folder, the torch thread count and the 1-minute load before and after every job
(a 2-core box slows down badly when something else runs: read the load beside the time).

    python benchmarks/run_all_timing.py --preset smoke
    python benchmarks/run_all_timing.py --preset default --reports /tmp/default-reports
"""
from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from sealbench.jobs import load_all_preset, run_job  # noqa: E402
from sealbench.models import set_threads  # noqa: E402
from sealbench.runfolder import device_name, machine_load, package_versions  # noqa: E402


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--preset", default="smoke")
    ap.add_argument("--data-dir", default=None)
    ap.add_argument("--reports", default=None, help="reports folder (default: a new temporary one)")
    ap.add_argument("--threads", default="auto")
    ap.add_argument("--out", default=None, help="JSON path (default: benchmarks/results/...)")
    args = ap.parse_args(argv)

    threads = set_threads(args.threads)
    reports = Path(args.reports or tempfile.mkdtemp(prefix=f"run-all-{args.preset}-"))
    jobs = load_all_preset(args.preset)
    date = dt.date.today().isoformat()
    out = Path(args.out or REPO / "benchmarks" / "results" / f"run_all_{args.preset}_cpu_{date}.json")
    record = {"preset": args.preset, "reports": str(reports), "torch_threads": threads,
              "device": device_name("cpu"), "versions": package_versions(), "date": date,
              "jobs": [], "complete": False}
    start = time.perf_counter()
    for i, job in enumerate(jobs, 1):
        before = machine_load()
        t = time.perf_counter()
        folder, summary, _ = run_job(job, str(reports), args.data_dir, progress=False,
                                     announce=lambda m: print(m, file=sys.stderr))
        seconds = time.perf_counter() - t
        entry = {"job": i, "task": job.get("task"), "protocol": job.get("protocol"),
                 "contenders": job.get("contenders"), "seconds": round(seconds, 1),
                 "run_folder": Path(folder).name, "complete": bool(summary.get("complete")),
                 "load_before": before, "load_after": machine_load()}
        record["jobs"].append(entry)
        record["total_seconds"] = round(time.perf_counter() - start, 1)
        print(f"[job {i}/{len(jobs)}] {entry['task']} {entry['protocol'] or ''}: {seconds / 60:.1f} min "
              f"(load {before['loadavg_1m']} -> {entry['load_after']['loadavg_1m']})", file=sys.stderr)
        out.write_text(json.dumps(record, indent=2))  # partial results survive a timeout
    record["complete"] = True
    out.write_text(json.dumps(record, indent=2))
    print(f"\n| job | task | protocol | minutes | load 1m before → after |\n|---|---|---|---|---|")
    for e in record["jobs"]:
        print(f"| {e['job']} | {e['task']} | {e['protocol'] or '–'} | {e['seconds'] / 60:.1f} | "
              f"{e['load_before']['loadavg_1m']} → {e['load_after']['loadavg_1m']} |")
    print(f"\npreset {args.preset}: {record['total_seconds'] / 60:.1f} min in all, {threads} torch thread(s), "
          f"{record['device']}, cpus {os.cpu_count()}\nwritten: {out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
