#!/usr/bin/env python3
"""Where the engine's time goes: torch.profiler tables for decoding and for training passes.

Profiles, on the embedded model (or --model), the three costs of a ReST-EM round:
  decode   one batched generation of `--rows` sampled rows (SEAL's self-edit sampling: temperature 1,
           top-p 0.95) and of greedy rows (answering): ms per decoding step from two lengths, and a
           profile of a short generation (host vs device time per op);
  one-row  a training pass with one live row in a bank of `--k` slots (the tail of a reward queue),
           eager and static (CUDA-graphed on a GPU);
  wide     a training pass with `--wide` live rows in the same bank (the body of a queue).
Prints each profile's top ops by host (self CPU) time and by device time, with the step's wall time,
so an optimisation starts from what dominates (the developer guide: profile before you optimise).

    PYTHONPATH=. python benchmarks/profile_engine.py --device cuda --out $OUT/profile.txt
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

import torch  # noqa: E402
from torch.profiler import ProfilerActivity, profile  # noqa: E402

from sealbench.config import LORA_TARGETS, LoRASettings, TrainSettings  # noqa: E402
from sealbench.engine.generate import GenRequest  # noqa: E402
from sealbench.engine.inner_loop import Engine, format_prompt  # noqa: E402
from sealbench.engine.models import load_model  # noqa: E402
from sealbench.engine.train import EditJob, QueueMeter  # noqa: E402
from sealbench.store import device_name  # noqa: E402


def sync(device):
    if str(device).startswith("cuda"):
        torch.cuda.synchronize()


def table(prof, rows: int) -> str:
    cuda = any(e.device_type.name == "CUDA" for e in prof.events()[:2000]) if prof.events() else False
    out = [prof.key_averages().table(sort_by="self_cpu_time_total", row_limit=rows)]
    if cuda:
        out.append(prof.key_averages().table(sort_by="self_cuda_time_total", row_limit=rows))
    return "\n".join(out)


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--model", default="embedded")
    ap.add_argument("--device", default="auto")
    ap.add_argument("--rows", type=int, default=250, help="decode: rows of one generation")
    ap.add_argument("--k", type=int, default=128, help="training: adapter slots in the bank")
    ap.add_argument("--wide", type=int, default=64, help="training: live rows of the wide pass")
    ap.add_argument("--top", type=int, default=25)
    ap.add_argument("--parts", default="decode,one-row,wide")
    ap.add_argument("--out", default=None)
    args = ap.parse_args(argv)
    loaded = load_model(args.model, args.device, "auto")
    device = loaded.device
    lines = [f"device: {device_name(str(device))}, torch {torch.__version__}, threads {torch.get_num_threads()}"]

    def say(text: str) -> None:
        print(text, flush=True)
        lines.append(text)

    engine = Engine(loaded, LoRASettings(r=32, alpha=64, targets=LORA_TARGETS), args.k)
    parts = args.parts.split(",")
    if "decode" in parts:
        prompt = format_prompt(engine.tokenizer, "Write the implications of this passage.\n\n" + "A sentence about history and science. " * 40)
        for label, temp in (("sampled", 1.0), ("greedy", 0.0)):
            def run(n):
                reqs = [GenRequest(prompt, None, n, temp, 0.95, seed=i) for i in range(args.rows)]
                sync(device)
                t = time.perf_counter()
                engine.generate(reqs)
                sync(device)
                return time.perf_counter() - t
            run(4)
            short, long = run(8), run(72)
            say(f"decode {label}, {args.rows} rows: {1000 * (long - short) / 64:.1f} ms/step "
                f"(8 tokens {short:.2f} s, 72 tokens {long:.2f} s; rows may stop early at EOS)")
            with profile(activities=[ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if str(device).startswith("cuda") else [])) as prof:
                run(16)
            say(f"--- profile: decode {label}, 16 new tokens\n" + table(prof, args.top))
        # Answering: rows routed through adapter slots (grouped by slot).
        reqs = [GenRequest(prompt, i % args.k, 40, 0.0, 1.0) for i in range(args.rows)]
        engine.generate(reqs[:8])
        sync(device)
        t = time.perf_counter()
        engine.generate(reqs)
        sync(device)
        say(f"decode routed greedy, {args.rows} rows over {min(args.rows, args.k)} slots, 40 tokens: {time.perf_counter() - t:.2f} s")

    train = TrainSettings(learning_rate=1e-3, epochs=1, batch_size=1)
    short = ["Title\nA short statement of about twenty tokens, as a typical note line is."]
    for part, n_edits in (("one-row", 1), ("wide", args.wide)):
        if part not in parts:
            continue
        for static in (False, True):
            jobs = [EditJob(short * 30, train, 7 + j) for j in range(n_edits)]
            for _ in engine.train_queue(jobs, static=static):  # warm-up (captures graphs)
                pass
            meter = QueueMeter()
            for _ in engine.train_queue(jobs, static=static, meter=meter):
                pass
            say(f"{part} pass, K={args.k}, {'static' if static else 'eager'}: {1000 * meter.seconds / max(meter.passes, 1):.1f} ms "
                f"a pass ({meter.passes} passes, {meter.static_passes} static)")
            with profile(activities=[ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if str(device).startswith("cuda") else [])) as prof:
                for _ in engine.train_queue([EditJob(short * 6, train, 7 + j) for j in range(n_edits)], static=static):
                    pass
                sync(device)
            say(f"--- profile: {part} pass, {'static' if static else 'eager'}, 6 steps\n" + table(prof, args.top))
    if args.out:
        Path(args.out).write_text("\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
