"""`sealbench run --dry-run`: the plan and its cost before any model loads.

The plan is the run's own (runner.prepare + the family's plan), so the counts are exact: units
already done in the run's folder, units reused from other run folders (and which), units to
compute, self-edits to sample, SEAL RL rounds a `seal` contender will trigger. Wall time per phase
comes from a cost model of the engine, simulated batch by batch exactly as the runner will batch:

* training: each global step of a batch of K edits costs `a + b x padded tokens` per forward pass
  and `c` per adapter its optimizer step updates; the steps are each edit's own `schedule` and a
  step's passes are the engine's own split (engine/train.py `step_passes`, capped at the bank's largest
  eager pass, recorded by the calibration): `plan_training`;
* answering and sampling: `g` seconds per generated token per row, `q` per answered question.

The rates are measured once per (device, model, K, threads) by a short calibration (a few training
steps and generations on the real model) and recorded in `<reports>/.calibration.json`, so later
dry runs on this device reuse them.
"""
from __future__ import annotations

import json
import time
from dataclasses import asdict, dataclass
from pathlib import Path

from .config import RunConfig
from .edits import EditSources, Pending
from .engine.train import CPU_PASS_TOKENS, GPU_PASS_TOKENS, schedule
from .engine.train import step_passes as engine_step_passes
from .executors import engine_name
from .families.base import Work
from .runner import prepare, run_id
from .store import RESULTS, SELF_EDITS, cached_rows, device_name, read_rows, write_json


NO_CAP = 1 << 62  # no cap on a pass's padded tokens (a CPU bank's memory plan, engine/train.py)


@dataclass
class Rates:
    a: float            # seconds per forward/backward pass (fixed part)
    b: float            # seconds per padded token of a pass
    c: float            # seconds per adapter updated by an optimizer step
    g: float            # seconds per generated token per row (rows batched)
    q: float            # seconds per answered question (batched, real answer settings)
    load_s: float       # loading the model
    eager_tokens: int = NO_CAP  # the bank's largest eager pass, padded tokens (engine/train.py `_memory_plan`)


def step_passes(groups: list[list[int]], overhead: int, max_tokens: int = NO_CAP) -> list[int]:
    """Padded tokens of each forward/backward pass of one global training step, split as the
    engine splits it (engine/train.py `train_queue`: one group of rows per live edit, `step_passes` over
    the groups' widths, at most `max_tokens` padded tokens a pass: the bank's `eager_tokens`).
    `groups` holds each live edit's micro-batch as sequence lengths in tokens, EOS included (the
    lengths of engine/train.py `encode`). A pass pads its groups to its own largest group's rows
    and its widest row (engine/train.py `_rows`)."""
    m = max(len(g) for g in groups)
    widths = [max(g) for g in groups]
    return [max(len(groups[g]) for g in part) * len(part) * max(widths[g] for g in part)
            for part in engine_step_passes(widths, m, overhead, max_tokens)]


def plan_training(works: list[Work], k: int, overhead: int,
                  max_tokens: int = NO_CAP) -> list[tuple[list[int], int]]:
    """The global steps of training `works` K at a time (as `train_edits` trains a batch: every edit
    in its slot, each its own `schedule`, seed 0), each as (padded tokens of its passes, adapters its
    optimizer step updates). A work with `steps` > 1 (continual) trains its plan that many times."""
    out = []
    adapting = [w for w in works if w.train is not None and w.seqs]
    for start in range(0, len(adapting), k):
        batch = adapting[start:start + k]
        plans = [schedule(len(w.seqs), w.train, 0)[0] for w in batch]
        for _ in range(max(w.steps for w in batch)):
            for t in range(max(len(p) for p in plans)):
                live = [(w, p[t]) for w, p in zip(batch, plans) if t < len(p)]
                passes = step_passes([[w.seqs[i] for i in micro.indices] for w, micro in live], overhead, max_tokens)
                out.append((passes, sum(micro.step_after for _, micro in live)))
    return out


def simulate_training(works: list[Work], k: int, rates: Rates, overhead: int, max_tokens: int = NO_CAP) -> float:
    """Seconds to train `works` K at a time, global step by step, passes as the engine splits them
    (`plan_training`)."""
    total = 0.0
    for passes, updates in plan_training(works, k, overhead, max_tokens):
        for tokens in passes:
            total += rates.a + rates.b * tokens
        total += rates.c * updates
    return total


def dry_run(config: RunConfig, say) -> dict:
    """Print the plan and its estimated cost; return both as a dict (tests read it)."""
    from .engine.models import fingerprint_of, resolve
    from .rl.policy import Policy, rl_run_id

    p = prepare(config)
    cfg = p.config
    name, location = resolve(cfg.model)
    fingerprints = {"base": fingerprint_of(location)}
    reports = Path(cfg.reports_dir)
    rl_lines, rl_work = [], []
    for cname, rl in p.rl_configs.items():
        rid = rl_run_id(rl, fingerprints["base"], data_dir=cfg.data_dir)
        folder = reports / rid
        if (folder / "COMPLETE").exists():
            fingerprints["policy:" + cname] = Policy.from_folder(folder, rl).fingerprint
            rl_lines.append(f"  SEAL policy of `{cname}`: ready ({rid})")
        else:
            done = sum((folder / f"round_{r}" / "policy.json").exists() for r in range(1, rl.rounds + 1))
            fingerprints["policy:" + cname] = f"untrained:{rid}"
            rounds = rl.rounds - done
            rl_lines.append(f"  SEAL policy of `{cname}`: {rounds} ReST-EM round(s) to train in {rid} "
                            f"({rl.n_items} items x k={rl.k} x {rl.repeats} repeats = {rl.n_items * rl.k * rl.repeats} "
                            f"inner-loop edits a round)")
            rl_work.append((rl, rounds))
    sources = EditSources(p.family, cfg, fingerprints, {}, cfg.data_dir)
    plan = p.family.plan(cfg, p.contenders, p.items, sources, fingerprints)
    rid = run_id(cfg, p.contenders, p.eval_set, fingerprints["base"], sources)
    folder = reports / rid
    here = {r["key"] for r in read_rows(folder / RESULTS) if r.get("status") == "ok"} if folder.exists() else set()
    cache = cached_rows(reports, RESULTS, exclude=folder)
    reused = [u for u in plan if u.key not in here and u.key in cache]
    pending = [u for u in plan if u.key not in here and u.key not in cache]
    have_edits = {r["key"] for r in read_rows(folder / SELF_EDITS)} if folder.exists() else set()
    have_edits |= set(cached_rows(reports, SELF_EDITS, exclude=folder))
    to_sample = {}
    for u in pending:
        items = {i.id: i for i in u.items}
        for ref in u.edits:
            pend = Pending(ref, u.contender, items[ref.item_id])
            key = sources.key(pend)
            if key not in have_edits and u.contender.edits in ("self", "policy"):
                to_sample[key] = pend
    phases: dict[str, float] = {}
    if pending or rl_work:
        rates = calibrate(cfg, p, location, fingerprints["base"], reports, say)
        k = cfg.edits_per_batch or _default_k(cfg)
        overhead = GPU_PASS_TOKENS if cfg.device.startswith("cuda") else CPU_PASS_TOKENS
        phases["load model"] = rates.load_s
        for rl, rounds in rl_work:
            phases["SEAL RL"] = phases.get("SEAL RL", 0.0) + rounds * _rl_round(p, rl, rates, k, overhead)
        max_new = [cfg.notes_max_tokens or pend.contender.max_new_tokens for pend in to_sample.values()]
        phases["self-edits"] = sum(max_new) * rates.g
        tokenizer = _tokenizer(location)
        works = [p.family.workload(u, cfg, tokenizer, sources) for u in pending]
        for eng in dict.fromkeys(engine_name(u) for u in pending):
            mine = [w for u, w in zip(pending, works) if engine_name(u) == eng]
            phases["inner loop (train)"] = (phases.get("inner loop (train)", 0.0)
                                            + simulate_training(mine, k, rates, overhead, rates.eager_tokens))
        phases["answers"] = sum(w.questions for w in works) * rates.q + sum(sum(w.gen_rows) for w in works) * rates.g
        phases["grading, bookkeeping"] = 0.02 * len(pending) + 2.0
    by_source: dict[str, int] = {}
    for u in reused:
        by_source[cache[u.key][0]] = by_source.get(cache[u.key][0], 0) + 1
    say(f"dry run: {cfg.task} · {cfg.protocol} · {name} · {len(p.contenders)} contender(s) · "
        f"{_describe(p, cfg)}\n  run folder: {folder}\n  units: {len(plan)} planned, {len(here)} done in this "
        f"folder, {len(reused)} reused from other runs, {len(pending)} to compute")
    for line in getattr(p.family, "plan_notes", lambda *a: [])(cfg, p.contenders):
        say(f"  {line}")
    for source, n in sorted(by_source.items()):
        say(f"    {n} reused from {source}")
    say(f"  self-edits to sample: {len(to_sample)}")
    for line in rl_lines:
        say(line)
    for phase, seconds in phases.items():
        say(f"  {phase:24s} ~{_fmt(seconds)}")
    total = sum(phases.values())
    say(f"  estimated wall time       ~{_fmt(total)}" + ("  (nothing to compute)" if not phases else ""))
    if total > GPU_SIZED_S and not on_gpu(cfg.device):
        say(f"  on this CPU: {GPU_NOTE}")
    return {"run_folder": str(folder), "planned": len(plan), "done_here": len(here), "reused": len(reused),
            "pending": len(pending), "to_sample": len(to_sample), "phases": phases, "total_s": total,
            "rl": rl_lines}


GPU_SIZED_S = 6 * 3600  # above this on a CPU, the dry run says the job is sized for a GPU
GPU_NOTE = ("a job this size is meant for a GPU (the `paper` preset and the `gpu`/`paper` RL presets are GPU "
            "presets; `--preset smoke` or `default` run on a CPU): run it with --device cuda")


def _describe(p, cfg) -> str:
    describe = getattr(p.family, "describe_items", None)
    return describe(cfg, p.items) if describe else f"{len(p.items)} {p.family.item_noun}"


def on_gpu(device: str) -> bool:
    from .engine.models import pick_device

    return pick_device(device).startswith("cuda")


def _rl_round(p, rl, rates: Rates, k: int, overhead: int) -> float:
    """One ReST-EM round: sampling, rewards (single-passage episodes), SFT, held-out scoring."""
    n = rl.n_items * rl.k
    sample = n * rl.max_new_tokens * rates.g
    seqs = [24] * max(1, rl.max_new_tokens // 24) + [220]  # notes lines + the passage (typical lengths)
    works = [Work(seqs, rl.inner, [], 5) for _ in range(n * rl.repeats)]
    reward = simulate_training(works, k, rates, overhead, rates.eager_tokens) + len(works) * 5 * rates.q
    sft = simulate_training([Work([400] * max(1, rl.n_items), rl.sft, [], 0)], 1, rates, overhead,
                            rates.eager_tokens)
    heldout = rl.heldout_items * (rl.max_new_tokens * rates.g + 5 * rates.q)
    return sample + reward + sft + heldout


def _default_k(cfg) -> int:
    from .engine.inner_loop import CPU_SLOTS

    return CPU_SLOTS if not cfg.device.startswith("cuda") else 128


def _tokenizer(location):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(location)


def _fmt(seconds: float) -> str:
    return f"{seconds:.0f} s" if seconds < 120 else f"{seconds / 60:.1f} min"


def calibrate(cfg, p, location, fingerprint: str, reports: Path, say=None) -> Rates:
    """The engine's rates on this device for this model, K and thread count: recorded ones from
    `<reports>/.calibration.json`, else measured now (~20-60 s on a CPU; `say` is told first)."""
    import torch

    key = (f"v4|{device_name(cfg.device if cfg.device != 'auto' else 'cpu')}|{fingerprint}|{cfg.edits_per_batch}|"
           f"{torch.get_num_threads()}")
    path = reports / ".calibration.json"
    try:
        known = json.loads(path.read_text(encoding="utf-8")) if path.exists() else {}
    except (UnicodeDecodeError, ValueError):
        known = {}  # a corrupt record is measured again
    if key in known and isinstance(known[key], dict) and None not in known[key].values():
        return Rates(**known[key])
    if say is not None:
        say(f"calibrating the cost model first: loading {cfg.model} and timing a few training steps and "
            "generations on this device (about 20-60 s on a CPU, less on a GPU; once per device, model, K and "
            f"thread count, recorded in {path})")
    rates = _measure(cfg, p)
    reports.mkdir(parents=True, exist_ok=True)
    known[key] = asdict(rates)
    write_json(path, known)  # atomic; a non-finite rate as null (measured again next time)
    return rates


def _measure(cfg, p) -> Rates:
    from .config import TrainSettings
    from .engine.generate import GenRequest
    from .engine.inner_loop import Engine, format_prompt
    from .engine.models import load_model
    from .engine.train import EditJob

    start = time.perf_counter()
    loaded = load_model(cfg.model, cfg.device, cfg.dtype)
    load_s = time.perf_counter() - start
    engine = Engine(loaded, cfg.lora_settings(), cfg.edits_per_batch, cfg.gen_batch_size)
    k = min(engine.k, 4)

    def step(n_edits: int, words: int) -> tuple[float, int]:
        """One micro-step of n edits with one sequence each: (seconds, padded tokens)."""
        text = "Calibration\n" + "word " * words
        jobs = [EditJob([text], TrainSettings(epochs=1), i) for i in range(n_edits)]
        t = time.perf_counter()
        engine.train(jobs)
        return time.perf_counter() - t, n_edits * (len(engine.tokenizer(text)["input_ids"]) + 1)

    step(k, 12)  # warm-up
    # t = a + b * tokens + c * edits, measured at the sizes real passes have (a few hundred tokens:
    # per-token cost falls with pass size on a CPU), each point the better of two tries
    (t1, n1), (t2, n2), (t3, n3) = (min(step(*x) for _ in range(2)) for x in ((1, 12), (k, 12), (k, 160)))
    b = max(1e-6, (t3 - t2) / max(1, n3 - n2))
    c = max(0.0, (t2 - t1 - b * (n2 - n1)) / max(1, k - 1))
    a = max(1e-4, t1 - b * n1 - c)
    rows = [GenRequest(format_prompt(engine.tokenizer, "Write a long list of facts about rivers:\n1.", "plain"),
                       None, 32, 1.0, 1.0, seed) for seed in range(16)]
    t = time.perf_counter()
    out = engine.generate(rows)
    g = (time.perf_counter() - t) / max(1, sum(len(engine.tokenizer(x)["input_ids"]) for x in out))
    questions = p.family.calibration_prompts(p.items, cfg, engine.tokenizer)[:32]
    t = time.perf_counter()
    if questions:
        p.family.answer(engine, questions, cfg)
    q = (time.perf_counter() - t) / max(1, len(questions))
    eager_tokens = engine.bank.eager_tokens  # set by the engine's memory plan when it first trained
    engine.close()
    return Rates(a, b, c, g, q, load_s, eager_tokens)
