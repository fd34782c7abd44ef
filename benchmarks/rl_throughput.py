#!/usr/bin/env python3
"""SEAL RL throughput: seconds per round and inner-loop edits per second of `SealTrainer`.

Runs the real RL loop (sample k notes per passage, reward each by the inner loop, keep, SFT, merge)
from a preset with optional overrides, in a fresh reports folder, and prints a table + writes
benchmarks/results/rl_throughput_<device>_<date>.json with the per-round breakdown (note sampling,
inner-loop training, answering, SFT), rewards, device name, torch threads and load.

CPU preset:  python benchmarks/rl_throughput.py --preset cpu --device cpu
From a run:  python benchmarks/rl_throughput.py --from-run reports/seal-rl-embedded-<hash>
GPU scale:   PYTHONPATH=. python benchmarks/rl_throughput.py --preset paper --n-passages 20 --repeats 1 --device cuda
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


from sealbench.models import set_threads  # noqa: E402
from sealbench.rl import SealTrainer, load_preset, rl_table  # noqa: E402
from sealbench.runfolder import device_name, machine_load, package_versions  # noqa: E402


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--preset", default="cpu")
    ap.add_argument("--model", default="embedded")
    ap.add_argument("--device", default="auto")
    ap.add_argument("--n-passages", type=int)
    ap.add_argument("--k", type=int)
    ap.add_argument("--repeats", type=int)
    ap.add_argument("--rounds", type=int)
    ap.add_argument("--notes-max-tokens", type=int)
    ap.add_argument("--inner-batch-size", type=int, help="inner-loop batch size (default: the preset's, 1)")
    ap.add_argument("--inner-epochs", type=int)
    ap.add_argument("--data-dir", default=os.environ.get("SEALBENCH_DATA_DIR"))
    ap.add_argument("--threads", default="auto")
    ap.add_argument("--out", default=str(REPO / "benchmarks" / "results"))
    ap.add_argument("--from-run", default=None,
                    help="summarise an existing RL run folder (e.g. reports/seal-rl-...) instead of running")
    ap.add_argument("--note", default=None, help="free-text note stored in the JSON (e.g. machine load)")
    args = ap.parse_args(argv)

    threads = set_threads(args.threads)
    if args.from_run:
        summary, device, wall, config = _from_run(Path(args.from_run))
        threads = json.loads((Path(args.from_run) / "manifest.json").read_text())["machine"]["torch_threads"]
    else:
        overrides = dict(model=args.model, device=args.device, n_passages=args.n_passages, k=args.k,
                         repeats=args.repeats, rounds=args.rounds)
        config = load_preset(args.preset, **overrides)
        if args.notes_max_tokens:
            config.notes.max_new_tokens = args.notes_max_tokens
        if args.inner_batch_size:
            config.inner_train.batch_size = args.inner_batch_size
        if args.inner_epochs:
            config.inner_train.epochs = args.inner_epochs
        with tempfile.TemporaryDirectory() as reports:
            trainer = SealTrainer(config, reports, args.data_dir, progress=True)
            start = time.perf_counter()
            trainer.train()
            wall = time.perf_counter() - start
            summary = trainer.summary()
            device = trainer.loaded.device
    rounds = []
    for s in summary["rounds"]:
        inner = s["seconds"]["train_s"] + s["seconds"]["answer_s"]
        n_edits = s["n_samples"] * config.repeats
        rounds.append({
            "round": s["round"], "n_samples": s["n_samples"], "inner_loop_edits": n_edits,
            "seconds": {**s["seconds"], "sft_s": s["sft"].get("train", {}).get("seconds", 0.0)},
            "inner_loop_edits_per_second": n_edits / inner if inner else None,
            "seconds_per_edit": inner / n_edits if n_edits else None,
            "mean_reward_all": s["mean_reward_all"], "mean_reward_kept": s["mean_reward_kept"],
            "sft": {k: v for k, v in s["sft"].items() if k != "train"},
        })
    result = {
        "benchmark": "rl_throughput", "date": dt.date.today().isoformat(), "preset": args.preset,
        "config": {k: summary["config"][k] for k in ("n_passages", "k", "repeats", "rounds", "keep")},
        "notes_max_new_tokens": config.notes.max_new_tokens, "inner_train": summary["config"]["inner_train"],
        "device": device, "device_name": device_name(device), "threads": threads, "machine": machine_load(),
        "versions": package_versions(), "wall_seconds": wall,
        "seconds_per_round": wall / len(rounds) if rounds else None, "rounds": rounds,
    }
    if args.from_run:  # the run's own machine record, not this process's
        manifest = json.loads((Path(args.from_run) / "manifest.json").read_text())
        result.update(machine=manifest["machine"], device_name=manifest["device_name"],
                      versions=manifest["versions"], source_run=Path(args.from_run).name,
                      wall_seconds_note="sum of the rounds' phase seconds (notes, train, answer, SFT)")
    if args.note:
        result["note"] = args.note
    print(rl_table(summary))
    print("| round | inner-loop edits | edits/s | s/edit | notes s | train s | answer s | SFT s |")
    print("|---|---|---|---|---|---|---|---|")
    for r in rounds:
        s = r["seconds"]
        print(f"| {r['round']} | {r['inner_loop_edits']} | {r['inner_loop_edits_per_second']:.3f} | "
              f"{r['seconds_per_edit']:.2f} | {s['generate_s']:.1f} | {s['train_s']:.1f} | {s['answer_s']:.1f} | "
              f"{s['sft_s']:.1f} |")
    print(f"\nwall {wall:.1f} s, {result['seconds_per_round']:.1f} s/round on {result['device_name']} "
          f"({threads} threads, load {result['machine']['loadavg_1m']})")
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    tag = "cuda" if device.startswith("cuda") else "cpu"
    path = out / f"rl_throughput_{tag}_{args.preset}_{result['date']}.json"
    path.write_text(json.dumps(result, indent=2) + "\n")
    print(f"written {path}")
    return 0


def _from_run(folder: Path):
    """(summary, device, wall seconds, config) of a finished RL run folder."""
    from sealbench.rl import config_from_dict

    if (folder / "summary.json").exists():
        summary = json.loads((folder / "summary.json").read_text())
    else:  # a run still going: its finished rounds
        summary = {"config": json.loads((folder / "config.json").read_text()),
                   "rounds": [json.loads(p.read_text()) for p in sorted(folder.glob("round_*/stats.json"))]}
    manifest = json.loads((folder / "manifest.json").read_text())
    raw = {k: v for k, v in summary["config"].items() if k not in ("kind", "passage_ids", "heldout_passage_ids")}
    config = config_from_dict(raw)
    rounds = summary["rounds"]
    wall = sum(sum(r["seconds"].values()) + r["sft"].get("train", {}).get("seconds", 0.0) for r in rounds)
    return summary, manifest["device"], wall, config


if __name__ == "__main__":
    sys.exit(main())
