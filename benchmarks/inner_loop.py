#!/usr/bin/env python3
"""Inner-loop benchmark: the same knowledge edits run SEAL-style and with the sealbench engine.

Both styles train the same LoRA (r=32, alpha=64, dropout 0, all attention+MLP projections, AdamW,
lr 1e-3, constant schedule) on the same token ids (tokenizer ids + EOS), in the same per-epoch order,
from the same adapter initialisation, and answer the same questions greedily (max 64 new tokens).
They differ only in the engineering that docs/DESIGN.md §5 says costs time:

  SEAL-style  a fresh PEFT model per edit (get_peft_model on the base); batch size 1 with every
              sequence right-padded to 2048 tokens (pads masked out of the loss: attention mask 0,
              labels -100); the adapter saved with save_pretrained, the PEFT wrapper unloaded and the
              adapter re-loaded with PeftModel.from_pretrained on the base before answering; one
              question per generate() call; adapter unloaded and its folder deleted afterwards.
  engine      sealbench.inner_loop.InnerLoop: one PEFT wrapper for the whole run, reset in memory per
              edit; no padding at batch size 1 (or dynamic padding with --engine-batch-size N); all of
              a passage's questions answered in one left-padded generate() batch.

Edits are SEAL's evaluation passages (SQuAD v1.1 dev, seed-42 shuffle) with training texts = the
first GPT-4.1 notes completion + the raw passage (sealbench.knowledge.training_texts).

Usage (CPU, small):   python benchmarks/inner_loop.py --device cpu --n-edits 2 --epochs 2 --max-seqs 4
Usage (GPU):          PYTHONPATH=. python benchmarks/inner_loop.py --device cuda --n-edits 5
See benchmarks/README.md for the commands behind the committed results.
"""
from __future__ import annotations

import argparse
import datetime as _dt
import json
import math
import os
import platform
import random
import re
import shutil
import statistics
import string
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

import torch  # noqa: E402

from sealbench import knowledge  # noqa: E402
from sealbench.inner_loop import ALL_LINEAR, InnerLoop, LoRAConfig, TrainConfig, format_prompt, \
    resolve_prompt_style  # noqa: E402
from sealbench.models import load_model  # noqa: E402

DEFAULT_NOTES = "notes/gpt-4.1_notes_val200.json"


# ----------------------------------------------------------------------------------- arguments
def parse_args(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default="embedded", help="model spec for sealbench.models.load_model")
    ap.add_argument("--device", default="auto", help="cpu | cuda | auto")
    ap.add_argument("--dtype", default="auto", help="auto (fp32 on CPU, bf16 on GPU) | float32 | bfloat16")
    ap.add_argument("--data-dir", default=None, help="sealbench data dir (default $SEALBENCH_DATA_DIR)")
    ap.add_argument("--passages-file", default=None,
                    help="JSON list of passages [{title, context, questions}] already in SEAL's eval order "
                         "(used instead of the dev file; see --export-subset)")
    ap.add_argument("--notes", default=None, help=f"notes JSON (default <data-dir>/{DEFAULT_NOTES})")
    ap.add_argument("--n-edits", type=int, default=3, help="timed edits (passages first..first+n-1)")
    ap.add_argument("--first-edit", type=int, default=0,
                    help="index of the first evaluation passage to edit (a later run can cover new passages)")
    ap.add_argument("--epochs", type=int, default=10)
    ap.add_argument("--lr", type=float, default=1e-3)
    ap.add_argument("--max-seqs", type=int, default=0,
                    help="cap training sequences per edit (0 = all); the raw passage is always kept")
    ap.add_argument("--seal-pad-length", type=int, default=2048, help="SEAL-style padding length")
    ap.add_argument("--engine-batch-size", default="1",
                    help="engine training batch size; a comma list runs one engine variant per entry; "
                         "an entry may name a generation mode too, e.g. 32:eager (default: the engine's "
                         "auto mode, compiled static-cache decoding on CUDA)")
    ap.add_argument("--repeats", type=int, default=1, help="time every edit this many times")
    ap.add_argument("--warmup-epochs", type=int, default=1, help="epochs of the untimed warm-up edit")
    ap.add_argument("--max-new-tokens", type=int, default=64)
    ap.add_argument("--prompt-style", default="auto", help="auto | chat | plain (format_prompt)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--threads", type=int, default=0, help="torch.set_num_threads (0 = leave as is)")
    ap.add_argument("--no-base", action="store_true", help="skip the (untimed) unadapted-model accuracy")
    ap.add_argument("--styles", default="seal,engine", help="which styles to run (seal,engine)")
    ap.add_argument("--out", default=None, help="JSON path (default benchmarks/results/inner_loop_<device>_<date>.json)")
    ap.add_argument("--export-subset", default=None, metavar="DIR",
                    help="write the first --n-edits eval passages and their notes to DIR (for the GPU box) and exit")
    ap.add_argument("--show", default=None, metavar="JSON", help="print the table of a saved result and exit")
    ap.add_argument("--pool", nargs="+", default=None, metavar="JSON",
                    help="pool saved results of the same settings over their passages (speed medians, "
                         "accuracy and paired tests vs SEAL-style on the passages both ran) and exit")
    return ap.parse_args(argv)


# ----------------------------------------------------------------------------------- data
def load_edits(args):
    """[(passage, training texts)] for the first n eval passages."""
    data_dir = knowledge.data_dir(args.data_dir)
    if args.passages_file:
        raw = json.loads(Path(args.passages_file).read_text())
        passages = knowledge._parse_passages(raw, args.passages_file, "dev")[
            args.first_edit: args.first_edit + args.n_edits]
    else:
        passages = knowledge.seal_eval_passages(args.first_edit + args.n_edits, data_dir)[args.first_edit:]
    notes_path = Path(args.notes) if args.notes else (data_dir / DEFAULT_NOTES if data_dir else None)
    if notes_path is None:
        sys.exit("no notes file: pass --notes or --data-dir / SEALBENCH_DATA_DIR")
    notes = knowledge.load_notes_file(notes_path)
    edits = []
    for p in passages:
        if p.context not in notes:
            sys.exit(f"{notes_path} has no notes for passage {p.id} ({p.title!r})")
        texts = knowledge.training_texts(p, notes[p.context][:1])  # first completion only
        if args.max_seqs and len(texts) > args.max_seqs:
            texts = texts[: args.max_seqs - 1] + [texts[-1]]  # keep the raw passage (last)
        edits.append((p, texts))
    return edits, str(notes_path)


def export_subset(args) -> None:
    edits, notes_path = load_edits(args)
    notes = knowledge.load_notes_file(notes_path)
    out = Path(args.export_subset)
    (out / "notes").mkdir(parents=True, exist_ok=True)
    (out / "eval_passages.json").write_text(json.dumps(
        [{k: v for k, v in p.to_dict().items() if k != "id"} for p, _ in edits], indent=1))
    (out / DEFAULT_NOTES).write_text(json.dumps(
        [{"title": p.title, "context": p.context, "completions": notes[p.context][:1]} for p, _ in edits],
        indent=1))
    print(f"wrote {len(edits)} passages to {out}/eval_passages.json and {out}/{DEFAULT_NOTES}")


# ----------------------------------------------------------------------------------- grading
def _normalize(s: str) -> str:
    s = s.lower()
    s = "".join(ch for ch in s if ch not in set(string.punctuation))
    s = re.sub(r"\b(a|an|the)\b", " ", s)
    return " ".join(s.split())


def get_grading():
    """(description, fn(answer, golds, question) -> bool). Uses sealbench.grading's `match` grader
    (Grader.grade(question, golds, prediction)); falls back to SQuAD-normalised containment only when
    that module is missing (it was written in parallel with this benchmark)."""
    try:
        from sealbench.grading import get_grader
        g = get_grader("match")
        return ("sealbench.grading.get_grader('match')",
                lambda answer, golds, question="": bool(g.grade(question, golds, answer)))
    except ImportError:
        pass

    def contains(answer, golds, question=""):
        na = _normalize(answer)
        return any(_normalize(g) and _normalize(g) in na for g in golds)
    return ("fallback: SQuAD-normalised containment (sealbench.grading not available when this ran)",
            contains)


def squad_em(answer, golds) -> bool:
    return any(_normalize(answer) == _normalize(g) for g in golds)


# ----------------------------------------------------------------------------------- measuring
def sync(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize()


def reset_peak(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.reset_peak_memory_stats()
    else:
        try:  # Linux: "5" resets this process's peak RSS (VmHWM)
            with open("/proc/self/clear_refs", "w") as f:
                f.write("5")
        except OSError:
            pass


def read_peak_mb(device: str) -> float:
    if device.startswith("cuda"):
        return torch.cuda.max_memory_allocated() / 2**20
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    import resource
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def current_memory_mb(device: str) -> float:
    if device.startswith("cuda"):
        return torch.cuda.memory_allocated() / 2**20
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return float("nan")


def device_name(device: str) -> str:
    if device.startswith("cuda"):
        return torch.cuda.get_device_name()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def encode(tok, text: str, max_length: int) -> list[int]:
    """Exactly InnerLoop._encode: tokenizer ids (truncated) + EOS."""
    ids = tok(text, add_special_tokens=True)["input_ids"][: max_length - 1]
    return ids + [tok.eos_token_id]


def lora_layers(model):
    return [m for m in model.modules()
            if hasattr(m, "reset_lora_parameters") and "default" in getattr(m, "lora_A", {})]


@torch.no_grad()
def seeded_lora_init(model, seed: int) -> None:
    """The engine's InnerLoop.reset, applied to a fresh PEFT model, so both styles start identical."""
    state = torch.random.get_rng_state()
    torch.manual_seed(seed)
    for layer in lora_layers(model):
        layer.reset_lora_parameters("default", True)
    torch.random.set_rng_state(state)


# ----------------------------------------------------------------------------------- SEAL style
def seal_style_edit(base, tok, texts, prompts, args, seed, epochs, workdir, device):
    """One edit the way SEAL's inner loop does it. Returns (result dict, base model back)."""
    from peft import LoraConfig, PeftModel, get_peft_model

    times = {}
    reset_peak(device)
    sync(device)
    t_all = t0 = time.perf_counter()
    cfg = LoraConfig(r=32, lora_alpha=64, lora_dropout=0.0, target_modules=list(ALL_LINEAR), bias="none",
                     task_type="CAUSAL_LM")
    model = get_peft_model(base, cfg)
    seeded_lora_init(model, seed)
    trainable = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(trainable, lr=args.lr, weight_decay=0.0)
    sync(device)
    times["setup"] = time.perf_counter() - t0

    # --- train: batch 1, every sequence right-padded to pad_len, pads out of the loss
    t0 = time.perf_counter()
    L = args.seal_pad_length
    pad = tok.pad_token_id
    rows = []
    for text in texts:
        ids = encode(tok, text, L)
        n = len(ids)
        input_ids = torch.tensor([ids + [pad] * (L - n)])
        attention = torch.zeros((1, L), dtype=torch.long)
        attention[0, :n] = 1
        labels = input_ids.masked_fill(attention == 0, -100)
        rows.append((input_ids, attention, labels, n))
    order_rng = random.Random(seed)  # same order as InnerLoop.train
    losses, epoch_losses, real, padded, steps = [], [], 0, 0, 0
    model.train()
    for _ in range(epochs):
        order = list(range(len(rows)))
        order_rng.shuffle(order)
        acc = 0.0
        for i in order:
            input_ids, attention, labels, n = rows[i]
            out = model(input_ids=input_ids.to(device), attention_mask=attention.to(device),
                        labels=labels.to(device))
            out.loss.backward()
            opt.step()
            opt.zero_grad(set_to_none=True)
            v = out.loss.item()
            losses.append(v)
            acc += v
            real += n
            padded += L
            steps += 1
        epoch_losses.append(acc / max(len(rows), 1))
    model.eval()
    sync(device)
    times["train"] = time.perf_counter() - t0

    # --- save the adapter, drop the wrapper, reload it from disk onto the base
    t0 = time.perf_counter()
    adir = Path(tempfile.mkdtemp(prefix="seal_adapter_", dir=workdir))
    model.save_pretrained(adir)
    del opt, trainable
    base = model.unload()
    del model
    model = PeftModel.from_pretrained(base, adir)
    model.eval()
    sync(device)
    times["save_reload"] = time.perf_counter() - t0

    # --- answer one question at a time
    t0 = time.perf_counter()
    answers = []
    with torch.no_grad():
        for prompt in prompts:
            enc = tok(prompt, return_tensors="pt", add_special_tokens=False).to(device)
            out = model.generate(**enc, max_new_tokens=args.max_new_tokens, do_sample=False, temperature=None,
                                 top_p=None, top_k=None, pad_token_id=tok.pad_token_id,
                                 eos_token_id=tok.eos_token_id)
            answers.append(tok.decode(out[0, enc["input_ids"].shape[1]:], skip_special_tokens=True).strip())
    sync(device)
    times["answer"] = time.perf_counter() - t0

    # --- tear down (part of SEAL's per-edit cost: the next edit needs a clean base)
    t0 = time.perf_counter()
    base = model.unload()
    del model
    shutil.rmtree(adir, ignore_errors=True)
    sync(device)
    times["save_reload"] += time.perf_counter() - t0
    times["total"] = time.perf_counter() - t_all
    result = {"seconds": times, "steps": steps, "tokens": real, "padded_tokens": padded,
              "first_loss": losses[0] if losses else None, "last_loss": losses[-1] if losses else None,
              "epoch_losses": epoch_losses, "answers": answers, "peak_memory_mb": read_peak_mb(device)}
    return result, base


# ----------------------------------------------------------------------------------- engine
def engine_edit(loop: InnerLoop, texts, prompts, args, seed, epochs, batch_size, device):
    times = {}
    reset_peak(device)
    sync(device)
    t_all = t0 = time.perf_counter()
    loop.reset(seed)
    sync(device)
    times["setup"] = time.perf_counter() - t0
    t0 = time.perf_counter()
    stats = loop.train(texts, TrainConfig(learning_rate=args.lr, epochs=epochs, batch_size=batch_size,
                                          max_length=args.seal_pad_length), seed=seed)
    sync(device)
    times["train"] = time.perf_counter() - t0
    times["save_reload"] = 0.0
    t0 = time.perf_counter()
    answers = loop.generate(prompts, max_new_tokens=args.max_new_tokens, batch_size=max(16, len(prompts)))
    sync(device)
    times["answer"] = time.perf_counter() - t0
    times["total"] = time.perf_counter() - t_all
    return {"seconds": times, "steps": stats.steps, "tokens": stats.tokens, "padded_tokens": stats.padded_tokens,
            "first_loss": stats.first_loss, "last_loss": stats.last_loss, "epoch_losses": stats.epoch_losses,
            "answers": answers, "peak_memory_mb": read_peak_mb(device)}


# ----------------------------------------------------------------------------------- statistics
def mcnemar_p(b: int, c: int) -> float:
    """Exact two-sided McNemar p-value for b vs c discordant pairs."""
    n = b + c
    if n == 0:
        return 1.0
    k = min(b, c)
    p = sum(math.comb(n, i) for i in range(k + 1)) / 2**n
    return min(1.0, 2 * p)


def versions() -> dict:
    import peft
    import transformers
    v = {"python": platform.python_version(), "torch": torch.__version__,
         "transformers": transformers.__version__, "peft": peft.__version__}
    if torch.cuda.is_available():
        v["cuda"] = torch.version.cuda
    head = REPO / ".git" / "HEAD"  # read, not `git` (no commits yet is fine)
    try:
        ref = head.read_text().strip()
        if ref.startswith("ref: "):
            ref_file = REPO / ".git" / ref[5:]
            v["git_commit"] = ref_file.read_text().strip() if ref_file.exists() else None
        else:
            v["git_commit"] = ref
    except OSError:
        v["git_commit"] = None
    return v


def print_table(result: dict) -> None:
    """The human-readable summary of a result dict (also for a saved JSON: --show FILE)."""
    summary, comparisons, base_acc = result["summary"], result["comparisons"], result["base_model_accuracy"]
    variants, grade_name = list(summary), result["grader"]
    rows = [("style", "s/edit", "train", "save+reload", "answer", "setup", "steps", "real tok",
             "padded tok", "peak MB", "acc (k/n)", "last loss", "speedup")]
    for v in variants:
        s = summary[v]
        b = s["breakdown_median"]
        sp = comparisons.get(v, {}).get("speedup_vs_seal")
        rows.append((v, f"{s['seconds_per_edit_median']:.2f}", f"{b['train']:.2f}", f"{b['save_reload']:.2f}",
                     f"{b['answer']:.2f}", f"{b['setup']:.3f}", f"{s['steps_per_edit']:g}",
                     f"{s['real_tokens_per_edit']:g}", f"{s['padded_tokens_per_edit']:g}",
                     f"{s['peak_memory_mb']:.0f}", f"{s['accuracy']:.3f} ({s['correct']}/{s['n_questions']})",
                     f"{s['last_loss_median']:.4f}", "1.00x" if v == "seal" else (f"{sp:.2f}x" if sp else "-")))
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    print()
    print(f"{result['device_name']} | {result['date']} | torch threads {result['torch_threads']} | "
          f"loadavg {tuple(round(x, 2) for x in result['loadavg_end'])} | target >= {result['target_speedup']:g}x")
    for i, r in enumerate(rows):
        print("  ".join(c.rjust(w) for c, w in zip(r, widths)))
        if i == 0:
            print("  ".join("-" * w for w in widths))
    for v, c in comparisons.items():
        print(f"{v}: {c['speedup_vs_seal']:.2f}x vs SEAL-style; accuracy diff {c['accuracy_difference']:+.3f} "
              f"on n={c['n_questions']} (discordant {c['discordant_seal_only']}/{c['discordant_engine_only']}, "
              f"McNemar p={c['mcnemar_exact_p']:.2f}); identical answers {c['identical_answers']:.0%}; "
              f"max |last-loss diff| {c['max_abs_last_loss_difference']:.4f}")
    if base_acc:
        print(f"unadapted base: {base_acc['accuracy']:.3f} ({base_acc['correct']}/{base_acc['n_questions']})")
    print(f"grader: {grade_name}")
    if not result.get("complete", True):
        print(f"INCOMPLETE run: {len(result['edits'])} of {result['config']['n_edits']} edits finished")


def pool_results(paths: list[str]) -> dict:
    """Pool several saved runs (e.g. one per device call) over their passages.

    Per variant and passage the first run found counts; a passage that a variant ran twice is
    checked for identical answers (reproducibility). Speed: median seconds per edit over all
    pooled edits. Accuracy: per question; each engine variant is compared with SEAL-style on the
    passages both ran (exact McNemar on the paired verdicts)."""
    runs: dict[str, dict[str, dict]] = {}
    repeats = {}
    files = []
    for path in paths:
        result = json.loads(Path(path).read_text())
        files.append({"file": str(path), "device_name": result["device_name"], "date": result["date"],
                      "complete": result.get("complete"), "edits": len(result["edits"]),
                      "dtype": result["dtype"], "epochs": result["config"]["epochs"]})
        for rec in result["edits"]:
            for variant, reps in rec["runs"].items():
                first = dict(reps[0], golds=rec["golds"])
                seen = runs.setdefault(variant, {})
                if rec["passage_id"] in seen:
                    same = seen[rec["passage_id"]]["answers"] == first["answers"]
                    repeats.setdefault(variant, []).append(same)
                else:
                    seen[rec["passage_id"]] = first
    summary = {}
    for variant, by_passage in runs.items():
        correct = [c for r in by_passage.values() for c in r["correct"]]
        summary[variant] = {
            "edits": len(by_passage), "n_questions": len(correct), "correct": sum(correct),
            "accuracy": sum(correct) / max(len(correct), 1),
            "seconds_per_edit_median": statistics.median(r["seconds"]["total"] for r in by_passage.values()),
            "train_median": statistics.median(r["seconds"]["train"] for r in by_passage.values()),
            "answer_median": statistics.median(r["seconds"]["answer"] for r in by_passage.values()),
            "repeated_passages_identical_answers": (f"{sum(repeats[variant])}/{len(repeats[variant])}"
                                                    if variant in repeats else None),
        }
    comparisons = {}
    for variant in runs:
        if variant == "seal" or "seal" not in runs:
            continue
        common = [pid for pid in runs[variant] if pid in runs["seal"]]
        s_seal = [c for pid in common for c in runs["seal"][pid]["correct"]]
        s_v = [c for pid in common for c in runs[variant][pid]["correct"]]
        b = sum(1 for x, y in zip(s_seal, s_v) if x and not y)
        c = sum(1 for x, y in zip(s_seal, s_v) if y and not x)
        seal_s = statistics.median(runs["seal"][pid]["seconds"]["total"] for pid in common)
        var_s = statistics.median(runs[variant][pid]["seconds"]["total"] for pid in common)
        comparisons[variant] = {
            "passages": len(common), "n_questions": len(s_v),
            "accuracy_seal": sum(s_seal) / max(len(s_seal), 1), "accuracy": sum(s_v) / max(len(s_v), 1),
            "discordant_seal_only": b, "discordant_engine_only": c, "mcnemar_exact_p": mcnemar_p(b, c),
            "speedup_vs_seal": seal_s / var_s,
        }
    return {"files": files, "summary": summary, "comparisons": comparisons}


def print_pool(pooled: dict) -> None:
    for f in pooled["files"]:
        print(f"{f['file']}: {f['device_name']} {f['date']}, {f['edits']} edits, {f['dtype']}, {f['epochs']} epochs")
    print("\n| style | edits | s/edit (median) | train | answer | accuracy | repeated passages, same answers |")
    print("|---|---|---|---|---|---|---|")
    for v, s in pooled["summary"].items():
        print(f"| {v} | {s['edits']} | {s['seconds_per_edit_median']:.2f} | {s['train_median']:.2f} | "
              f"{s['answer_median']:.2f} | {s['accuracy']:.1%} ({s['correct']}/{s['n_questions']}) | "
              f"{s['repeated_passages_identical_answers'] or '-'} |")
    for v, c in pooled["comparisons"].items():
        print(f"{v} vs SEAL-style on {c['passages']} passages / {c['n_questions']} questions: "
              f"{c['speedup_vs_seal']:.2f}x, accuracy {c['accuracy']:.1%} vs {c['accuracy_seal']:.1%} "
              f"(discordant {c['discordant_seal_only']} SEAL-only / {c['discordant_engine_only']} engine-only, "
              f"McNemar p={c['mcnemar_exact_p']:.2f})")


# ----------------------------------------------------------------------------------- main
def main(argv=None) -> int:
    args = parse_args(argv)
    if args.show:
        print_table(json.loads(Path(args.show).read_text()))
        return 0
    if args.pool:
        pooled = pool_results(args.pool)
        print_pool(pooled)
        if args.out:
            Path(args.out).write_text(json.dumps(pooled, indent=1))
            print(f"wrote {args.out}")
        return 0
    if args.export_subset:
        export_subset(args)
        return 0
    if args.threads:
        torch.set_num_threads(args.threads)
    styles = [s.strip() for s in args.styles.split(",") if s.strip()]
    # "32" or "32:eager": training batch size and generation mode of one engine variant
    engine_specs = [(int(x.split(":")[0]), x.split(":")[1] if ":" in x else None)
                    for x in str(args.engine_batch_size).split(",") if x.strip()]
    load_start = os.getloadavg()
    started = _dt.datetime.now(_dt.timezone.utc)

    edits, notes_path = load_edits(args)
    grade_name, grade = get_grading()

    t0 = time.perf_counter()
    seal_loaded = load_model(args.model, device=args.device, dtype=args.dtype) if "seal" in styles else None
    eng_loaded = load_model(args.model, device=args.device, dtype=args.dtype) if "engine" in styles else None
    loaded = seal_loaded or eng_loaded
    device = loaded.device
    load_seconds = time.perf_counter() - t0
    tok = loaded.tokenizer
    prompt_style = resolve_prompt_style(tok, args.prompt_style)
    t0 = time.perf_counter()
    loop = InnerLoop(eng_loaded, LoRAConfig()) if eng_loaded else None
    engine_wrap_seconds = time.perf_counter() - t0
    # one InnerLoop per variant, all on the engine's single PEFT wrapper (same LoRA config)
    loops = {}
    for b, mode in (engine_specs if loop else []):
        name = f"engine_bs{b}" + (f"_{mode}" if mode else "")
        loops[name] = (b, InnerLoop(eng_loaded, LoRAConfig(), generation=mode))
    base = seal_loaded.model if seal_loaded else None
    memory_after_load_mb = current_memory_mb(device)  # both model copies + the engine's adapter
    workdir = tempfile.mkdtemp(prefix="sealbench_bench_")

    def prompts_of(p):
        return [format_prompt(tok, knowledge.answer_prompt(p, q), prompt_style) for q in p.questions]

    variants = (["seal"] if "seal" in styles else []) + list(loops)
    print(f"device={device} ({device_name(device)}) dtype={loaded.dtype} threads={torch.get_num_threads()} "
          f"edits={len(edits)} epochs={args.epochs} seqs/edit={[len(t) for _, t in edits]} "
          f"questions={sum(len(p.questions) for p, _ in edits)} grader={grade_name}", flush=True)

    def run(variant, p, texts, seed, epochs, prompts):
        nonlocal base
        if variant == "seal":
            r, base = seal_style_edit(base, tok, texts, prompts, args, seed, epochs, workdir, device)
            return r
        bs, variant_loop = loops[variant]
        return engine_edit(variant_loop, texts, prompts, args, seed, epochs, bs, device)

    # warm-up: one untimed short edit per variant (CUDA context, kernels, allocator, tokenizer caches)
    # (the last two sequences of edit 0: one note and the raw passage, the longest sequence)
    # (on CUDA the engine's warm-up also compiles its decode step: a one-off cost per process)
    wp, wtexts = edits[0]
    warmup_seconds = {}
    for v in variants:
        w = run(v, wp, wtexts[-2:], args.seed, args.warmup_epochs, prompts_of(wp)[:2])
        warmup_seconds[v] = w["seconds"]
        print(f"warm-up {v}: {w['seconds']['total']:.2f}s", flush=True)

    def build_result(per_edit, complete):
        def med(xs):
            return statistics.median(xs) if xs else float("nan")

        summary = {}
        for v in variants:
            per_edit_med = {k: [med([r["seconds"][k] for r in rec["runs"][v]]) for rec in per_edit]
                            for k in ("total", "setup", "train", "save_reload", "answer")}
            first = [rec["runs"][v][0] for rec in per_edit]
            correct = [c for r in first for c in r["correct"]]
            summary[v] = {
                "seconds_per_edit_median": med(per_edit_med["total"]),
                "seconds_per_edit_all": per_edit_med["total"],
                "breakdown_median": {k: med(x) for k, x in per_edit_med.items() if k != "total"},
                "steps_per_edit": med([r["steps"] for r in first]),
                "real_tokens_per_edit": med([r["tokens"] for r in first]),
                "padded_tokens_per_edit": med([r["padded_tokens"] for r in first]),
                "peak_memory_mb": max(r["peak_memory_mb"] for rec in per_edit for r in rec["runs"][v]),
                "accuracy": sum(correct) / max(len(correct), 1),
                "correct": sum(correct), "n_questions": len(correct),
                "accuracy_mean_of_passages": statistics.mean(sum(r["correct"]) / max(len(r["correct"]), 1)
                                                             for r in first),
                "squad_em": sum(c for r in first for c in r["squad_em"]) / max(len(correct), 1),
                "last_loss_median": med([r["last_loss"] for r in first]),
            }
        comparisons = {}
        if "seal" in summary:
            s_seal = [c for rec in per_edit for c in rec["runs"]["seal"][0]["correct"]]
            a_seal = [a for rec in per_edit for a in rec["runs"]["seal"][0]["answers"]]
            for v in variants:
                if v == "seal":
                    continue
                s_v = [c for rec in per_edit for c in rec["runs"][v][0]["correct"]]
                a_v = [a for rec in per_edit for a in rec["runs"][v][0]["answers"]]
                b = sum(1 for x, y in zip(s_seal, s_v) if x and not y)
                c = sum(1 for x, y in zip(s_seal, s_v) if y and not x)
                loss_gap = [abs(rec["runs"]["seal"][0]["last_loss"] - rec["runs"][v][0]["last_loss"])
                            for rec in per_edit]
                comparisons[v] = {
                    "speedup_vs_seal": summary["seal"]["seconds_per_edit_median"] / summary[v]["seconds_per_edit_median"],
                    "accuracy_difference": summary[v]["accuracy"] - summary["seal"]["accuracy"],
                    "n_questions": len(s_v),
                    "discordant_seal_only": b, "discordant_engine_only": c,
                    "mcnemar_exact_p": mcnemar_p(b, c),
                    "identical_answers": sum(1 for x, y in zip(a_seal, a_v) if x == y) / max(len(a_v), 1),
                    "max_abs_last_loss_difference": max(loss_gap) if loss_gap else None,
                }
        base_acc = None
        if per_edit and "base" in per_edit[0]:
            bc = [c for rec in per_edit for c in rec["base"]["correct"]]
            base_acc = {"accuracy": sum(bc) / max(len(bc), 1), "correct": sum(bc), "n_questions": len(bc)}

        target = 7.0 if device.startswith("cuda") else 5.0
        result = {
            "benchmark": "inner_loop",
            "date": started.strftime("%Y-%m-%d"),
            "started_utc": started.isoformat(timespec="seconds"),
            "device": device, "device_name": device_name(device), "dtype": loaded.dtype,
            "torch_threads": torch.get_num_threads(), "cpu_count": os.cpu_count(),
            "loadavg_start": load_start, "loadavg_end": os.getloadavg(),
            "versions": versions(),
            "model": loaded.describe(),
            "config": {k: v for k, v in vars(args).items() if k not in ("export_subset", "show")} | {
                "prompt_style": prompt_style, "notes_file": notes_path, "notes": "first completion + raw passage",
                "lora": {"r": 32, "alpha": 64, "dropout": 0.0, "target_modules": list(ALL_LINEAR)},
                "optimizer": "AdamW(weight_decay=0), constant lr", "generation": "greedy",
                "timing": "per edit: median over repeats; summary: median over edits; after one untimed warm-up "
                          "edit per style; CUDA synchronised at every timer",
                "seal_style": "fresh get_peft_model per edit, batch 1, right-pad to seal_pad_length (pads: mask 0, "
                              "labels -100), save_pretrained + unload + PeftModel.from_pretrained, one question "
                              "per generate(), unload + delete adapter dir (counted in save_reload)",
                "engine": "InnerLoop.reset in memory, no padding at bs 1 / dynamic padding at bs>1, batched "
                          "left-padded greedy generate",
                "engine_generation_modes": {n: lp.generation_mode for n, (_, lp) in loops.items()},
            },
            "grader": grade_name,
            "target_speedup": target,
            "memory_after_load_mb": memory_after_load_mb,
            "memory_note": ("peak_memory_mb is the process-wide peak during that style's edits (CUDA: "
                            "max_memory_allocated; CPU: VmHWM, reset per edit) and includes both model "
                            "copies (SEAL-style and engine each hold one); memory_after_load_mb is that "
                            "common floor"),
            "load_seconds": load_seconds, "engine_wrap_seconds_once": engine_wrap_seconds,
            "warmup_seconds": warmup_seconds,
            "complete": complete, "summary": summary, "comparisons": comparisons, "base_model_accuracy": base_acc,
            "edits": per_edit,
        }
        return result, summary, comparisons, base_acc

    out = Path(args.out) if args.out else (REPO / "benchmarks" / "results" /
                                           f"inner_loop_{device.split(':')[0]}_{started:%Y-%m-%d}.json")

    per_edit = []
    for e, (p, texts) in enumerate(edits):
        prompts = prompts_of(p)
        golds = [q.answers for q in p.questions]
        seed = args.seed + args.first_edit + e  # the seed of an edit is tied to its passage
        rec = {"passage_id": p.id, "title": p.title, "n_sequences": len(texts), "n_questions": len(prompts),
               "questions": [q.question for q in p.questions], "golds": golds, "runs": {v: [] for v in variants}}
        for rep in range(args.repeats):
            # alternate the order each repeat so neither style always runs first
            for v in (variants if (e + rep) % 2 == 0 else variants[::-1]):
                r = run(v, p, texts, seed, args.epochs, prompts)
                r["correct"] = [grade(a, g, q.question) for a, g, q in zip(r["answers"], golds, p.questions)]
                r["squad_em"] = [squad_em(a, g) for a, g in zip(r["answers"], golds)]
                if rep > 0:  # answers of later repeats are only checked, not stored
                    r["answers_same_as_repeat0"] = r["answers"] == rec["runs"][v][0]["answers"]
                    del r["answers"]
                rec["runs"][v].append(r)
                print(f"edit {e} rep {rep} {v:>10}: total {r['seconds']['total']:7.2f}s "
                      f"train {r['seconds']['train']:7.2f}s answer {r['seconds']['answer']:6.2f}s "
                      f"save/reload {r['seconds']['save_reload']:5.2f}s last loss {r['last_loss']:.4f} "
                      f"correct {sum(r['correct'])}/{len(r['correct'])}", flush=True)
        if loop is not None and not args.no_base:
            with loop.base_model():
                ans = loop.generate(prompts, max_new_tokens=args.max_new_tokens)
            rec["base"] = {"answers": ans, "correct": [grade(a, g, q.question) for a, g, q in
                                                       zip(ans, golds, p.questions)]}
        per_edit.append(rec)
        partial, *_ = build_result(per_edit, False)  # a timed-out run still leaves its edits
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(json.dumps(partial, indent=1))
    shutil.rmtree(workdir, ignore_errors=True)

    result, summary, comparisons, base_acc = build_result(per_edit, True)
    out.write_text(json.dumps(result, indent=1))

    print_table(result)
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
