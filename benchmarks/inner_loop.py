#!/usr/bin/env python3
"""Inner-loop benchmark: knowledge edits run SEAL-style and through the batched engine, in one process.

Every style trains the same LoRA (r=32, alpha=64, all attention and MLP projections, AdamW, lr 1e-3,
constant schedule) with SEAL's semantics (batch 1 per edit, 10 epochs, each edit's sequences in its
own seeded order) on the same edits (SEAL's evaluation passages + the first GPT-4.1 notes completion,
the teacher-notes contender), and answers the passage's questions greedily (up to 64 new tokens),
graded by `match`. They differ only in engineering (docs/design.md §5):

  seal     SEAL's loop: a fresh PEFT model per edit, every sequence right-padded to 2048 tokens,
           the adapter saved and reloaded from disk before answering, one question per generate().
  engine   sealbench's engine: every edit in one queue through K adapter slots trained together in
           one batched forward pass per step, a slot reused as soon as its edit has finished and been
           answered (continuous batching, engine/train.py `train_queue`); the same episode `sealbench
           run` and the RL reward use (families/squad/episode.py). `--k 1,8,32,128` runs one K per
           entry (K x `--batches` edits, or `--n-passages`).
  lockstep the engine as it was before slot reuse: fixed batches of K edits, each batch running
           until its longest edit has finished, then answered (the same code with one hand-back per
           batch), for a comparison in one process.

Workloads (`--workload`): `teacher` (above) or `self-notes`: the 250 self-edits the embedded model
sampled in round 1 of the `gpu` RL preset (../shared/data/bench/rl_round1_self_notes_embedded.jsonl,
SEAL's "implications" prompt, RL-pool passages), made into training sequences by the rule of every
run (at most 256 statements: longer ones are rejected and counted), the real long-tailed reward
workload (median 7 sequences an edit, largest 395). `--edits N` repeats or cuts the list.

Each result is one JSON object with device_name, style, workload, k, edits, epochs, batch_size_per_edit,
steps_per_edit, seconds_per_edit, speedup_vs_seal_style, (engine styles) global steps, passes,
occupancy (mean live slots / K), trained tokens per second, model FLOP/s and utilisation (6 x
parameters x trained tokens / s, over the device's dense bf16 peak where known), the time of a pass
with one live row, accuracy (+ CI), n_questions,
peak_memory_mb, and per-passage accuracies (for paired tests). `--pool A.json B.json` compares two
result files on the passages both ran (paired permutation test). Commands: benchmarks/README.md.
"""
from __future__ import annotations

import argparse
import datetime as dt
import json
import random
import shutil
import sys
import tempfile
import threading
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

import torch  # noqa: E402

from sealbench.config import LORA_TARGETS, LoRASettings, TrainSettings  # noqa: E402
from sealbench.engine.inner_loop import Engine, format_prompt  # noqa: E402
from sealbench.engine.models import load_model  # noqa: E402
from sealbench.families.squad.data import load_notes_file, seal_eval_passages  # noqa: E402
from sealbench.engine.train import EditJob, QueueMeter  # noqa: E402
from sealbench.families.squad.data import load_passages  # noqa: E402
from sealbench.families.squad.episode import (AnswerSettings, EditError, Episode, build_texts,  # noqa: E402
                                              iter_episodes, run_episodes)
from sealbench.families.squad.prompts import answer_prompt, training_texts  # noqa: E402
from sealbench.grading import cut_answer, get_grader  # noqa: E402
from sealbench.stats import mean_ci, paired_difference  # noqa: E402
from sealbench.store import device_name, machine_load  # noqa: E402


def parse_args(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--model", default="embedded")
    ap.add_argument("--device", default="auto")
    ap.add_argument("--dtype", default="auto")
    ap.add_argument("--data-dir", default=None)
    ap.add_argument("--styles", default="seal,engine", help="comma list of seal, engine, lockstep")
    ap.add_argument("--workload", default="teacher", choices=["teacher", "self-notes"])
    ap.add_argument("--edits", type=int, default=0, help="self-notes: edits to run (0: all 250)")
    ap.add_argument("--k", default="1,8,32,128", help="engine: edits per batch, comma list")
    ap.add_argument("--batches", type=int, default=1, help="engine: timed batches per K")
    ap.add_argument("--seal-edits", type=int, default=2, help="SEAL-style: timed edits")
    ap.add_argument("--first", type=int, default=0, help="first evaluation passage")
    ap.add_argument("--n-passages", type=int, default=0, help="engine: edit exactly these passages (0: K x batches)")
    ap.add_argument("--epochs", type=int, default=10)
    ap.add_argument("--max-new-tokens", type=int, default=64)
    ap.add_argument("--seal-pad-length", type=int, default=2048)
    ap.add_argument("--flush-at", type=int, default=0,
                    help="engine: hand back finished edits (to be answered) in groups of this many (0: the engine's default, K/4)")
    ap.add_argument("--heartbeat", type=float, default=0, help="print the queue's counters every this many seconds")
    ap.add_argument("--warmup", type=int, default=1, help="untimed warm-up batches")
    ap.add_argument("--threads", type=int, default=0)
    ap.add_argument("--out", default=None)
    ap.add_argument("--pool", nargs=2, default=None, metavar="JSON", help="paired comparison of two results")
    return ap.parse_args(argv)


def edits_for(args, n: int, first: int):
    """(passage, training texts) for n edits from SEAL's evaluation passages starting at `first`
    (past the 200 passages with notes, passages repeat with the next notes completion)."""
    passages = seal_eval_passages(200, args.data_dir)
    notes = load_notes_file(Path(args.data_root) / "notes" / "gpt-4.1_notes_val200.json")
    out = []
    for i in range(first, first + n):
        p = passages[i % 200]
        out.append((p, training_texts(p, [notes[p.context][(i // 200) % 5]])))
    return out


def reset_peak(device):
    if device.startswith("cuda"):
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()


def peak_mb(device) -> float:
    if device.startswith("cuda"):
        return torch.cuda.max_memory_allocated() / 2**20
    import resource
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def sync(device):
    if device.startswith("cuda"):
        torch.cuda.synchronize()


# ----------------------------------------------------------------------------------- engine
# Dense bf16 peak FLOP/s by device name (vendor datasheets, without sparsity), for utilisation.
PEAK_FLOPS = {"H200": 989e12, "H100": 989e12, "A100": 312e12}


def self_note_edits(args) -> tuple[list, int]:
    """(passage, training texts) per sampled self-edit of the RL workload file, and how many were
    rejected by the validity rule (more than 256 statements)."""
    rows = [json.loads(x) for x in (Path(args.data_root) / "bench" / "rl_round1_self_notes_embedded.jsonl")
            .read_text().splitlines() if x.strip()]
    passages = {p.id: p for p in load_passages("train", args.data_dir)}
    out, rejected = [], 0
    for row in rows:
        p = passages[row["item_id"]]
        try:
            out.append((p, build_texts([p], [[row["text"]]], "implications", True, 256)[0]))
        except EditError:
            rejected += 1
    n = args.edits or len(out)
    return [out[i % len(out)] for i in range(n)], rejected


def engine_style(args, loaded, k: int, grader, lockstep: bool = False) -> dict:
    if args.workload == "self-notes":
        edits, rejected = self_note_edits(args)
    else:
        edits, rejected = edits_for(args, args.n_passages or k * args.batches, args.first), 0
    train = TrainSettings(learning_rate=1e-3, epochs=args.epochs, batch_size=1)
    answer = AnswerSettings("plain", args.max_new_tokens)
    engine = Engine(loaded, LoRASettings(), n_slots=k, gen_batch_size=4096)
    warm = edits_for(args, k, 150)[:k]
    for _ in range(args.warmup):  # untimed: allocator, kernels, tokenizer caches
        run_episodes(engine, [Episode(f"w{i}", [p], t, i) for i, (p, t) in enumerate(warm)],
                     train.updated(epochs=1), answer, grader)
    reset_peak(loaded.device)
    engine.meter = meter = QueueMeter()
    if args.heartbeat:  # a long run killed by a time limit still shows where it was
        def beat(t0=time.perf_counter()):
            while True:
                time.sleep(args.heartbeat)
                memory = ""
                if str(loaded.device).startswith("cuda"):
                    free, _ = torch.cuda.mem_get_info()
                    memory = (f" allocated {torch.cuda.memory_allocated() / 1e9:.1f} GB reserved "
                              f"{torch.cuda.memory_reserved() / 1e9:.1f} GB free {free / 1e9:.1f} GB")
                print(f"[{time.perf_counter() - t0:.0f} s] {meter}{memory}", file=sys.stderr, flush=True)
        threading.Thread(target=beat, daemon=True).start()
    episodes = [Episode(f"{i}", [p], t, 1000 + i) for i, (p, t) in enumerate(edits)]
    rows, start = {}, time.perf_counter()
    # lockstep: fixed batches of K, each handed back (and answered) only when all of it has finished
    queues = [episodes[b:b + k] for b in range(0, len(episodes), k)] if lockstep else [episodes]
    for queue in queues:
        for done in iter_episodes(engine, queue, train, answer, grader, flush_at=k if lockstep else args.flush_at or None):
            rows.update((e.key, r) for e, r in done)
    sync(loaded.device)
    seconds = time.perf_counter() - start
    rows = [rows[e.key] for e in episodes]
    one_row = one_row_pass_seconds(engine, train)
    engine.close()
    per_passage = {}
    for (p, _), r in zip(edits, rows):  # a passage edited several times: its mean
        if r["status"] == "ok":
            per_passage.setdefault(p.id, []).append(r["accuracy"])
    per_passage = {pid: sum(v) / len(v) for pid, v in per_passage.items()}
    result = _result(args, loaded, "lockstep" if lockstep else "engine", k, len(edits), seconds,
                     rows[0]["train"]["steps"], per_passage, sum(len(r.get("questions", [])) for r in rows),
                     failures=sum(r["status"] != "ok" for r in rows))
    n_params = sum(p.numel() for n, p in loaded.model.named_parameters() if "embed" not in n)
    flops = 6 * n_params * meter.tokens / max(meter.seconds, 1e-9)
    peak = next((v for name, v in PEAK_FLOPS.items() if name in result["device_name"]), None)
    sequences = [len(t) for _, t in edits]
    result.update(
        steps_per_edit=None, rejected_edits=rejected, flush_at=k if lockstep else (args.flush_at or None),
        sequences_per_edit={"median": sorted(sequences)[len(sequences) // 2], "max": max(sequences)},
        global_steps=meter.steps, passes=meter.passes, static_passes=meter.static_passes,
        plan_static_tokens=meter.static_tokens, plan_eager_tokens=meter.eager_tokens, memory_splits=meter.memory_splits, occupancy=round(meter.occupancy, 4), flushes=meter.flushes,
        train_seconds=meter.seconds, trained_tokens=meter.tokens, padded_tokens=meter.padded_tokens,
        trained_tokens_per_s=meter.tokens / max(meter.seconds, 1e-9), model_tflops_per_s=flops / 1e12,
        mfu=flops / peak if peak else None, one_live_row_pass_s=one_row,
        answer_seconds=sum(r["timing"]["answer_s"] for r in rows))
    return result


def one_row_pass_seconds(engine, train) -> dict:
    """Wall time of a training pass (and its optimizer step) with one live row (an edit alone in
    the bank: the tail of a queue), from 40 micro-steps of a short edit, eager and in the static
    (on CUDA: captured) form, after one untimed run of each."""
    texts = ["Title\nA short statement of about twenty tokens, as a typical note line is."] * 40
    out = {}
    for name, static in (("eager", False), ("static", True)):
        for _ in range(2):
            meter = QueueMeter()
            for _ in engine.train_queue([EditJob(texts, train.updated(epochs=1), 7)], meter=meter, static=static):
                pass
        out[name] = meter.seconds / max(meter.passes, 1)
    return out


# ----------------------------------------------------------------------------------- SEAL style
def seal_style(args, loaded, grader) -> dict:
    """SEAL's inner loop (its TTT server / knowledge-incorporation query code), timed per edit."""
    from peft import LoraConfig, PeftModel, get_peft_model

    tok, device, base = loaded.tokenizer, loaded.device, loaded.model
    edits = edits_for(args, args.seal_edits, args.first)
    workdir = Path(tempfile.mkdtemp(prefix="seal_style_"))
    per_passage, n_questions, steps = {}, 0, 0
    reset_peak(device)
    start = time.perf_counter()
    for n, (p, texts) in enumerate(edits):
        model = get_peft_model(base, LoraConfig(r=32, lora_alpha=64, lora_dropout=0.0, target_modules=list(LORA_TARGETS)))
        opt = torch.optim.AdamW([q for q in model.parameters() if q.requires_grad], lr=1e-3, weight_decay=0.0)
        L, pad = args.seal_pad_length, tok.pad_token_id
        rows = []
        for text in texts:
            ids = tok(text)["input_ids"][: L - 1] + [tok.eos_token_id]
            x = torch.tensor([ids + [pad] * (L - len(ids))], device=device)
            att = torch.zeros_like(x)
            att[0, :len(ids)] = 1
            rows.append((x, att, x.masked_fill(att == 0, -100)))
        order_rng, steps = random.Random(1000 + n), 0
        model.train()
        for _ in range(args.epochs):
            order = list(range(len(rows)))
            order_rng.shuffle(order)
            for i in order:
                x, att, labels = rows[i]
                model(input_ids=x, attention_mask=att, labels=labels).loss.backward()
                opt.step()
                opt.zero_grad(set_to_none=True)
                steps += 1
        model.eval()
        folder = Path(tempfile.mkdtemp(dir=workdir))
        model.save_pretrained(folder)
        base = model.unload()
        model = PeftModel.from_pretrained(base, folder)
        correct = []
        with torch.no_grad():
            for q in p.questions:
                enc = tok(format_prompt(tok, answer_prompt(p, q), "plain"), return_tensors="pt",
                          add_special_tokens=False).to(device)
                out = model.generate(**enc, max_new_tokens=args.max_new_tokens, do_sample=False,
                                     pad_token_id=tok.pad_token_id)
                raw = tok.decode(out[0, enc["input_ids"].shape[1]:], skip_special_tokens=True)
                correct.append(float(bool(grader.grade(q.question, q.answers, cut_answer(raw)))))
        base = model.unload()
        shutil.rmtree(folder, ignore_errors=True)
        per_passage[p.id] = sum(correct) / len(correct)
        n_questions += len(correct)
    sync(device)
    loaded.model = base
    return _result(args, loaded, "seal", 1, len(edits), time.perf_counter() - start, steps, per_passage, n_questions)


def _result(args, loaded, style, k, edits, seconds, steps, per_passage, n_questions, failures=0) -> dict:
    acc = mean_ci(list(per_passage.values()))
    return {"device_name": device_name(loaded.device), "date": dt.date.today().isoformat(), "style": style,
            "workload": args.workload, "k": k,
            "edits": edits, "epochs": args.epochs, "batch_size_per_edit": 1, "steps_per_edit": steps,
            "seconds_per_edit": seconds / max(edits, 1), "speedup_vs_seal_style": None, "accuracy": acc["mean"],
            "accuracy_ci": [acc["ci_low"], acc["ci_high"]], "n_passages": acc["n"], "n_questions": n_questions,
            "peak_memory_mb": round(peak_mb(loaded.device), 1), "failed_edits": failures, "model": loaded.name,
            "dtype": loaded.dtype, "torch_threads": torch.get_num_threads(), "machine": machine_load(),
            "per_passage": per_passage,
            "first_passage": args.first}


def pool(a_path: str, b_path: str) -> None:
    a, b = (json.loads(Path(p).read_text()) for p in (a_path, b_path))
    a = a if isinstance(a, dict) else a[0]
    b = b if isinstance(b, dict) else b[0]
    common = sorted(set(a["per_passage"]) & set(b["per_passage"]))
    d = paired_difference([a["per_passage"][p] for p in common], [b["per_passage"][p] for p in common])
    print(json.dumps({"a": f"{a['style']} K={a['k']}", "b": f"{b['style']} K={b['k']}", "n_passages": len(common),
                      "accuracy_a": mean_ci([a["per_passage"][p] for p in common]),
                      "accuracy_b": mean_ci([b["per_passage"][p] for p in common]), "difference": d}, indent=1))


def main(argv=None) -> None:
    args = parse_args(argv)
    if args.pool:
        return pool(*args.pool)
    if args.threads:
        torch.set_num_threads(args.threads)
    from sealbench.inputs import data_dir

    root = data_dir(args.data_dir)
    args.data_root, args.data_dir = str(root), str(root)
    loaded = load_model(args.model, args.device, args.dtype)
    grader = get_grader("match")
    out = Path(args.out or REPO / "benchmarks" / "results" /
               f"inner_loop_{'cuda' if loaded.device.startswith('cuda') else 'cpu'}_{dt.date.today().isoformat()}.json")
    out.parent.mkdir(parents=True, exist_ok=True)
    results = []

    def record(result):  # written after every result: a run cut short keeps what it measured
        results.append(result)
        seal = next((r for r in results if r["style"] == "seal"), None)
        for r in results:
            r["speedup_vs_seal_style"] = seal["seconds_per_edit"] / r["seconds_per_edit"] if seal else None
        out.write_text(json.dumps(results, indent=1) + "\n")
        print(json.dumps({k: v for k, v in result.items() if k != "per_passage"}), flush=True)

    styles = args.styles.split(",")
    if "seal" in styles:
        record(seal_style(args, loaded, grader))
    for k in [int(x) for x in args.k.split(",")]:
        for style in ("lockstep", "engine"):
            if style in styles:
                record(engine_style(args, loaded, k, grader, lockstep=style == "lockstep"))
    for r in results:
        print(f"{r['style']:8s} K={r['k']:<4d} edits={r['edits']:<4d} {r['seconds_per_edit']:8.3f} s/edit  "
              f"x{(r['speedup_vs_seal_style'] or 0):7.1f}  acc {r['accuracy']:.3f} (n={r['n_passages']})  "
              f"peak {r['peak_memory_mb']:.0f} MB" + (f"  occupancy {r['occupancy']:.2f}  passes {r['passes']}"
                                                      if "occupancy" in r else ""))
    print(f"written: {out}")


if __name__ == "__main__":
    main()
