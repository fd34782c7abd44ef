#!/usr/bin/env python3
"""SEAL RL throughput: one or more ReST-EM rounds from a preset, timed per phase.

Runs the real loop (`sealbench.rl.train`: sample k self-edits per item, reward every sample with
`repeats` batched inner-loop episodes, keep, SFT, merge) in a fresh reports folder and writes
benchmarks/results/rl_throughput_<device>_<date>.json: seconds per round and per phase (sampling,
rewards, SFT), inner-loop edits per second, the reward queue's global steps, passes, occupancy
(mean live slots / K) and trained tokens per second, rewards, device name, torch threads and load.

SEAL's knowledge round size on a GPU (target: <= 5 minutes on one H200):
    PYTHONPATH=. python benchmarks/rl_throughput.py --preset gpu --rounds 1 --heldout-items 0 --device cuda
A CPU check:
    python benchmarks/rl_throughput.py --preset tiny --device cpu
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

from sealbench import rl  # noqa: E402
from sealbench.registry import rl_preset  # noqa: E402
from sealbench.store import device_name, machine_load, package_versions  # noqa: E402


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--preset", default="tiny")
    ap.add_argument("--model", default=None)
    ap.add_argument("--device", default="auto")
    ap.add_argument("--rounds", type=int, default=None)
    ap.add_argument("--heldout-items", type=int, default=None)
    ap.add_argument("--n-items", type=int, default=None)
    ap.add_argument("--data-dir", default=None)
    ap.add_argument("--reports", default=None)
    ap.add_argument("--out", default=None)
    args = ap.parse_args(argv)
    cfg = rl_preset(args.preset, model=args.model, device=args.device, rounds=args.rounds,
                    heldout_items=args.heldout_items, n_items=args.n_items)
    reports = Path(args.reports or tempfile.mkdtemp(prefix="rl-throughput-"))
    before, start = machine_load(), time.perf_counter()
    policy = rl.train(cfg, reports, args.data_dir, progress=False, say=lambda m: print(m, file=sys.stderr))
    wall = time.perf_counter() - start
    rounds = [json.loads((policy.folder / f"round_{r}" / "stats.json").read_text()) for r in range(1, cfg.rounds + 1)]
    record = {"device_name": device_name(cfg.device if cfg.device != "auto" else ("cuda" if _cuda() else "cpu")),
              "date": dt.date.today().isoformat(), "preset": args.preset, "config": cfg.identity(),
              "wall_seconds": wall, "versions": package_versions(), "load_before": before, "load_after": machine_load(),
              "rounds": [{"round": s["round"], "n_samples": s["n_samples"], "n_kept": s["n_kept"],
                          "seconds": s["seconds"], "round_seconds": sum(s["seconds"].values()),
                          "edits_per_second": s["edits_per_second"], "inner_loop": s.get("inner_loop"),
                          "reward_all": s["reward_all"],
                          "reward_kept": s["reward_kept"]} for s in rounds], "rl_run": policy.folder.name}
    kind = "cuda" if "cpu:" not in record["device_name"] else "cpu"
    out = Path(args.out or REPO / "benchmarks" / "results" / f"rl_throughput_{kind}_{record['date']}.json")
    out.write_text(json.dumps(record, indent=2) + "\n")
    for r in record["rounds"]:
        print(f"round {r['round']}: {r['round_seconds']:.1f} s ({r['n_samples']} samples x {cfg.repeats} repeats, "
              f"{r['edits_per_second']:.2f} edits/s)")
    print(f"written: {out}")
    return 0


def _cuda() -> bool:
    import torch
    return torch.cuda.is_available()


if __name__ == "__main__":
    raise SystemExit(main())
