#!/usr/bin/env python3
"""Scale-out: the same knowledge run on 1 and on N Ray workers, units per second and speedup.

Starts one Ray on this machine (its start-up is timed apart), then runs `sealbench run` with
`--executor ray --workers W` for each W in --workers, each in a fresh reports folder (nothing is
reused), and writes JSON with device_name, workers, units_per_second, speedup_vs_one_worker (and
wall seconds, the seconds to the first finished batch, whether the rows equal the first run's). A
run's wall time includes what a user waits for: the driver's model load, the workers' start and
model loads, every batch.

On the lent 2-GPU box (docs/scale-out.md says how Ray and the model get there):
    python3 benchmarks/scale_out.py --workers 1 2 --n-passages 64 --contender passage
        -> benchmarks/results/scale_out_cuda_<date>.json
A CPU smoke check with the tiny random model (numbers mean nothing; printed, not written, unless --out):
    python3 benchmarks/scale_out.py --tiny --n-passages 4 --epochs 1 --max-answer-tokens 4
"""
from __future__ import annotations

import argparse
import datetime as dt
import json
import sys
import tempfile
import time
from datetime import datetime
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from sealbench.config import RunConfig, device_kind  # noqa: E402
from sealbench.runner import run  # noqa: E402
from sealbench.store import RESULTS, device_name, package_versions, read_rows  # noqa: E402

VOLATILE = ("timing", "machine", "finished", "wall_s", "train")


def tiny_checkpoint(folder: Path) -> str:
    """The tests' tiny random Llama saved as a checkpoint dir (workers load models from disk)."""
    from sealbench.engine.models import tiny_random_model

    tiny = tiny_random_model(seed=0)
    tiny.model.save_pretrained(folder)
    tiny.tokenizer.save_pretrained(folder)
    return str(folder)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--workers", type=int, nargs="+", default=[1, 2], help="worker counts to compare (first = baseline)")
    ap.add_argument("--gpus-per-worker", type=float, default=None, help="default: 1 with GPUs, else 0")
    ap.add_argument("--model", default="embedded")
    ap.add_argument("--tiny", action="store_true", help="the tiny random model (CPU smoke check)")
    ap.add_argument("--contender", nargs="+", default=["passage"])
    ap.add_argument("--n-passages", type=int, default=64)
    ap.add_argument("--epochs", type=int, default=None, help="default: SEAL's 10")
    ap.add_argument("--edits-per-batch", type=int, default=None, help="K per worker (default: by memory)")
    ap.add_argument("--max-answer-tokens", type=int, default=64)
    ap.add_argument("--device", default="auto")
    ap.add_argument("--data-dir", default=None)
    ap.add_argument("--reports", default=None, help="where the run folders go (default: a temp dir)")
    ap.add_argument("--out", default=None)
    args = ap.parse_args(argv)

    import ray

    reports = Path(args.reports or tempfile.mkdtemp(prefix="scale-out-"))
    model = tiny_checkpoint(reports / "tiny-ckpt") if args.tiny else args.model
    device = "cpu" if args.tiny and args.device == "auto" else args.device
    kind, dtype = device_kind(device, "auto")
    start = time.perf_counter()
    ray.init(include_dashboard=False, logging_level="error")
    ray_start_s = time.perf_counter() - start

    runs, first_rows = [], None
    for w in args.workers:
        cfg = RunConfig(model=model, contenders=args.contender, n_passages=args.n_passages, epochs=args.epochs,
                        max_answer_tokens=args.max_answer_tokens, edits_per_batch=args.edits_per_batch,
                        device=device, data_dir=args.data_dir, reports_dir=str(reports / f"workers-{w}"),
                        executor="ray", workers=w, gpus_per_worker=args.gpus_per_worker)
        began, t = datetime.now().astimezone(), time.perf_counter()
        result = run(cfg, progress=False, say=lambda m: print(m, file=sys.stderr))
        wall = time.perf_counter() - t
        rows = read_rows(result.folder / RESULTS)
        finished = sorted(datetime.fromisoformat(r["finished"]) for r in rows if r.get("finished"))
        same = sorted(({k: v for k, v in r.items() if k not in VOLATILE} for r in rows), key=lambda r: r["key"])
        first_rows = first_rows if first_rows is not None else same
        runs.append({"workers": w, "units": result.n_computed, "wall_s": round(wall, 2),
                     "units_per_second": result.n_computed / wall,
                     "first_batch_s": round((finished[0] - began).total_seconds(), 1) if finished else None,
                     "failures": len(result.failures), "rows_equal_first_run": same == first_rows,
                     "run_id": result.folder.name})
        print(f"workers={w}: {result.n_computed} units in {wall:.1f} s = {runs[-1]['units_per_second']:.3f} units/s",
              file=sys.stderr)
    ray.shutdown()

    base = runs[0]["units_per_second"]
    record = {"device_name": device_name("cuda" if kind == "cuda" else "cpu"),
              "workers": [r["workers"] for r in runs],
              "units_per_second": [round(r["units_per_second"], 4) for r in runs],
              "speedup_vs_one_worker": [round(r["units_per_second"] / base, 3) for r in runs],
              "date": dt.date.today().isoformat(), "device_kind": kind, "dtype": dtype,
              "model": "tiny-random" if args.tiny else args.model, "contenders": args.contender,
              "n_passages": args.n_passages, "epochs": args.epochs, "edits_per_batch": args.edits_per_batch,
              "ray_start_s": round(ray_start_s, 1), "runs": runs, "versions": {**package_versions(), "ray": ray.__version__}}
    if args.workers[0] != 1:
        record["note"] = f"speedup is against {args.workers[0]} worker(s), the first of --workers"
    text = json.dumps(record, indent=2) + "\n"
    out = args.out or (REPO / "benchmarks" / "results" / f"scale_out_cuda_{record['date']}.json"
                       if kind == "cuda" and not args.tiny else None)
    if out:
        Path(out).write_text(text)
        print(f"written: {out}", file=sys.stderr)
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
