"""The two multi-passage knowledge protocols (docs/DESIGN.md §1a): `cpt` and `continual`.

Both reuse the single-passage runner's pieces (`KnowledgeRun`): contenders, the passage list,
self-edit generation and caching (`self_edits.jsonl`, same keys and seeds as a single run, so the
same notes are sampled), training texts, answering and grading.

* **cpt** (continued pretraining at scale N): for each N in `n_values`, one adapter per contender is
  trained on the union of the first N passages' training sequences and answers all their questions.
  Accuracy against N, with a 95% bootstrap CI over the N passages. Sets are nested (first N of the
  pool). The adapter's seed is derived from the contender and the passage ids exactly as the single
  protocol derives it, so **CPT with N=1 is the single protocol** on that passage (same texts, seed,
  config => same predictions). Non-adapting contenders (`base`, `in-context`) answer every pool
  passage once; their accuracy at N is the mean over the first N passages.
* **continual** (sequential self-edits, forgetting): S seeded random sequences of K passages from the
  pool. Per sequence: evaluate the base model on all K passages (row 0), then for step k = 1..K train
  an adapter on passage k-1's edit, merge it into the weights, evaluate on passages 0..k-1 of the
  sequence (row k). The result is the (K+1) x K lower-triangular accuracy matrix (cells not evaluated
  are null), averaged over sequences with its (population) std, as in SEAL's released matrix. The
  base weights are restored exactly (a saved copy is loaded back) before each sequence and after the
  run. One unit = one (contender, sequence): resuming redoes a sequence that was cut mid-way.

Each protocol writes a run folder (config.json, manifest.json, results.jsonl, self_edits.jsonl) and
`summary.json` with `"protocol"` set, only once every planned unit has a row.
"""
from __future__ import annotations

import json
import math
import random
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from statistics import fmean

import torch

from . import knowledge
from .contenders import Contender
from .inner_loop import InnerLoop, TrainConfig, TrainingError, format_prompt, peak_memory_mb
from .knowledge import Passage
from .models import LoadedModel
from .notes import NotesError
from .runfolder import build_manifest, derive_seed, machine_load, now_iso
from .runner import RESULTS, KnowledgeConfig, KnowledgeRun, RunError, Unit, _progress
from .stats import fmt_ci, mean_ci, paired_difference

PROTOCOLS = ("single", "cpt", "continual")


# ---------------------------------------------------------------------------------------- configs
@dataclass
class CPTConfig(KnowledgeConfig):
    """Continued pretraining: one adapter on N passages, for each N in `n_values`.

    Defaults follow SEAL's CPT runs: 3 epochs, batch 4 x gradient accumulation 2 (dynamic padding,
    mean over real tokens per batch), lr 1e-3, LoRA r=32 alpha=64. `n_passages` is ignored: the
    pool is the first max(n_values) evaluation passages.
    """
    protocol: str = "cpt"
    n_values: list[int] = field(default_factory=lambda: [1, 4, 16])
    train: TrainConfig = field(default_factory=lambda: TrainConfig(epochs=3, batch_size=4, grad_accum_steps=2))

    def __post_init__(self):
        if not self.n_values or min(self.n_values) < 1:
            raise RunError("cpt needs --cpt-n values >= 1 (e.g. --cpt-n 1 4 16)")
        self.n_values = sorted(set(int(n) for n in self.n_values))
        self.n_passages = max(self.n_values)


@dataclass
class ContinualConfig(KnowledgeConfig):
    """Continual self-edits: K sequential merged edits, S seeded random sequences from the pool.

    SEAL: K=8, S=64 over its 200 evaluation passages. `n_passages` is the pool the sequences are
    drawn from (at least K; default K, i.e. S random orders of the same K passages).
    """
    protocol: str = "continual"
    contenders: list[str] = field(default_factory=lambda: ["passage"])
    n_steps: int = 8          # K
    n_sequences: int = 8      # S
    n_passages: int = 0       # pool size; 0 = n_steps

    def __post_init__(self):
        if self.n_steps < 1 or self.n_sequences < 1:
            raise RunError("continual needs --steps >= 1 and --sequences >= 1")
        if self.n_passages == 0:
            self.n_passages = self.n_steps
        if self.n_passages < self.n_steps:
            raise RunError(f"continual: the pool ({self.n_passages} passages) is smaller than K="
                           f"{self.n_steps}; raise --n-passages or lower --steps")


def make_config(protocol: str, **kw) -> KnowledgeConfig:
    """The config dataclass for a protocol name (`single`, `cpt`, `continual`)."""
    cls = {"single": KnowledgeConfig, "cpt": CPTConfig, "continual": ContinualConfig}.get(protocol)
    if cls is None:
        raise RunError(f"unknown protocol {protocol!r}; use one of {', '.join(PROTOCOLS)}")
    kw = {k: v for k, v in kw.items() if k in cls.__dataclass_fields__}
    kw["protocol"] = protocol
    return cls(**kw)


def run_protocol(protocol: str, config: KnowledgeConfig, reports_dir: str | Path = "reports",
                 data: str | None = None, loaded: LoadedModel | None = None, progress: bool = True) -> dict:
    """Run (or resume) one knowledge protocol; returns its summary (written when complete)."""
    return protocol_run(protocol, config, reports_dir, data, loaded, progress).run()


def protocol_run(protocol: str, config: KnowledgeConfig, reports_dir: str | Path = "reports",
                 data: str | None = None, loaded: LoadedModel | None = None, progress: bool = True):
    """The run object (has .folder, .plan(), .pending(), .run()) for a protocol."""
    if protocol not in PROTOCOLS:
        raise RunError(f"unknown protocol {protocol!r}; use one of {', '.join(PROTOCOLS)}")
    if config.protocol != protocol:
        fields = {k: getattr(config, k) for k in KnowledgeConfig.__dataclass_fields__ if k != "protocol"}
        if protocol == "cpt" and not isinstance(config, CPTConfig):
            fields.pop("train")  # a single-protocol train config is not CPT's; use CPT's defaults
        config = make_config(protocol, **fields)
    cls = {"single": KnowledgeRun, "cpt": CPTRun, "continual": ContinualRun}[protocol]
    return cls(config, reports_dir, data, loaded=loaded, progress=progress)


# ---------------------------------------------------------------------------------- shared base
class _ProtocolRun(KnowledgeRun):
    """KnowledgeRun's set-up with a protocol-specific run-folder name (`<task>-<protocol>-<model>`)."""

    def __init__(self, config: KnowledgeConfig, reports_dir: str | Path = "reports",
                 data: str | None = None, loaded: LoadedModel | None = None, progress: bool = True):
        super().__init__(config, reports_dir, data, loaded=loaded, progress=progress)

    def _folder_name(self) -> str:
        return f"{self.config.task}-{self.config.protocol}-{self.config.model}"

    def _start(self) -> InnerLoop:
        loaded = self._model()
        loop = InnerLoop(loaded, self.config.lora)
        if not (self.folder.path / "manifest.json").exists():
            self.folder.write_manifest(build_manifest(self.resolved, loaded.describe(), loaded.device))
        return loop

    def _groups(self, todo: list):
        """(inner loop, units, policy fingerprint) per model: the base model for every contender but
        the policy contenders (SEAL), whose RL-trained policy writes the notes and is the model adapted
        (trained first, or reused from the reports dir, exactly as in the single protocol)."""
        base_loop = self._start()
        base = [u for u in todo if u.contender.name not in self.rl_configs]
        if base:
            yield base_loop, base, None
        for name, rl_config in self.rl_configs.items():
            units = [u for u in todo if u.contender.name == name]
            if units:
                policy = self._policy(rl_config)
                yield InnerLoop(policy, self.config.lora), units, policy.fingerprint

    def _edits_for(self, loop: InnerLoop, contenders: list[Contender], passages: list[Passage]) -> dict:
        """Self-edits (all k per passage) for these contenders and passages, generated or cached."""
        units = [Unit(c, p, e) for c in contenders if c.needs_notes for p in passages
                 for e in range(c.edits_per_passage)]
        return self._self_edits(loop, units) if units else {}

    def _texts(self, c: Contender, passages: list[Passage], edits: dict, row: dict, timing: dict) -> list[str]:
        """Training sequences for a contender on several passages: each passage's single-protocol
        texts (every edit of it), concatenated in passage order."""
        texts: list[str] = []
        for p in passages:
            if not c.needs_notes:
                texts += knowledge.training_texts(p, [], include_passage=True)
                continue
            notes = []
            for e in range(c.edits_per_passage):
                key = f"{c.name}|{p.id}|{e}"
                sub = {"key": key}
                sub_timing = {"generate_s": 0.0}
                t = self._training_texts(c, p, edits.get(key), sub, sub_timing)  # validates, raises
                timing["generate_s"] += sub_timing["generate_s"]
                notes.append(sub.get("self_edit") or "")
                if c.edits_per_passage == 1:
                    texts += t
            if c.edits_per_passage > 1:
                texts += knowledge.training_texts(p, notes, c.notes.prompt, include_passage=c.include_passage)
        row["n_train_sequences"] = len(texts)
        return texts

    def _answer_many(self, loop: InnerLoop, c: Contender, passages: list[Passage], timing: dict,
                     use_base: bool = False) -> list[dict]:
        """Answer every question of `passages` in one batched call; per-passage result dicts."""
        from .grading import exact_match, f1_score

        prompts, owners = [], []
        for i, p in enumerate(passages):
            if not p.questions:
                raise ValueError(f"passage {p.id} ({p.title!r}) has no questions to answer")
            for q in p.questions:
                prompts.append(format_prompt(loop.tokenizer, knowledge.answer_prompt(p, q, c.answer_with_context),
                                             self.config.answer_style))
                owners.append((i, q))
        t = time.perf_counter()
        if use_base:
            with loop.base_model():
                answers = loop.generate(prompts, self.config.max_answer_tokens, self.config.answer_batch_size)
        else:
            answers = loop.generate(prompts, self.config.max_answer_tokens, self.config.answer_batch_size)
        timing["answer_s"] = timing.get("answer_s", 0.0) + time.perf_counter() - t
        t = time.perf_counter()
        out = [{"passage_id": p.id, "title": p.title, "questions": []} for p in passages]
        for (i, q), a in zip(owners, answers):
            out[i]["questions"].append({
                "question": q.question, "golds": q.answers, "prediction": a,
                "correct": bool(self.grader.grade(q.question, q.answers, a)),
                "em": exact_match(a, q.answers), "f1": f1_score(a, q.answers)})
        for r in out:
            qs = r["questions"]
            r["accuracy"] = sum(q["correct"] for q in qs) / len(qs)
            r["em"] = sum(q["em"] for q in qs) / len(qs)
            r["f1"] = sum(q["f1"] for q in qs) / len(qs)
        timing["grade_s"] = timing.get("grade_s", 0.0) + time.perf_counter() - t
        return out

    def _header(self) -> dict:
        summary = {"run_id": self.folder.path.name, "task": self.config.task,
                   "protocol": self.config.protocol, "model": self.config.model,
                   "grader": self.config.grader, "seed": self.config.seed}
        manifest_path = self.folder.path / "manifest.json"
        if manifest_path.exists():
            manifest = json.loads(manifest_path.read_text())
            summary["model_fingerprint"] = manifest["model"]["fingerprint"]
            summary["device_name"] = manifest.get("device_name")
        rl = self._rl_summaries()
        if rl:
            summary["seal_rl"] = rl
        return summary


def _failure(err: BaseException) -> str:
    if isinstance(err, torch.cuda.OutOfMemoryError):
        return "out of GPU memory: lower --batch-size/--answer-batch-size or use a smaller model"
    return str(err)


_RECORDED = (NotesError, TrainingError, ValueError, torch.cuda.OutOfMemoryError)


# ----------------------------------------------------------------------------------------- CPT
@dataclass
class CPTUnit:
    contender: Contender
    n: int                     # 0 = a non-adapting contender answering the whole pool once

    @property
    def key(self) -> str:
        return f"{self.contender.name}|N={self.n if self.n else 'all'}"


class CPTRun(_ProtocolRun):
    """Continued pretraining at scale N (see the module docstring)."""

    config: CPTConfig

    def plan(self) -> list[CPTUnit]:
        units = []
        for c in self.contenders:
            if c.adapt:
                units += [CPTUnit(c, n) for n in self.config.n_values]
            else:
                units.append(CPTUnit(c, 0))
        return units

    def _execute(self, todo: list[CPTUnit]) -> None:
        bar = _progress(len(todo), "units", self.progress)
        try:
            for loop, units, policy_fingerprint in self._groups(todo):
                edits = self._edits_for(loop, [u.contender for u in units], self.passages)
                for unit in units:
                    bar.set_postfix_str(unit.key)
                    row = self._run_cpt_unit(loop, unit, edits)
                    if policy_fingerprint:
                        row["policy_fingerprint"] = policy_fingerprint
                    self.folder.append(RESULTS, row)
                    bar.update(1)
        finally:
            bar.close()

    def train_seed(self, c: Contender, passages: list[Passage]) -> int:
        """For N=1 this is exactly the single protocol's unit seed (key `contender|passage|0`)."""
        return derive_seed(self.config.seed, f"{c.name}|{'+'.join(p.id for p in passages)}|0")

    def _run_cpt_unit(self, loop: InnerLoop, unit: CPTUnit, edits: dict) -> dict:
        c, cfg = unit.contender, self.config
        passages = self.passages[:unit.n] if unit.n else self.passages
        seed = self.train_seed(c, passages)
        row = {"key": unit.key, "contender": c.name, "n": unit.n, "passage_ids": [p.id for p in passages],
               "seed": seed, "status": "ok", "error": None, "n_train_sequences": 0, "train": None}
        timing = {"generate_s": 0.0, "train_s": 0.0, "answer_s": 0.0, "grade_s": 0.0}
        start = time.perf_counter()
        try:
            if c.adapt:
                texts = self._texts(c, passages, edits, row, timing)
                loop.reset(seed)
                stats = loop.train(texts, cfg.train, seed=seed)
                row["train"] = stats.to_dict()
                timing["train_s"] = stats.seconds
            row["passages"] = self._answer_many(loop, c, passages, timing, use_base=not c.adapt)
        except _RECORDED as err:
            row.update(status="failed", error=_failure(err))
        timing["total_s"] = time.perf_counter() - start + timing["generate_s"]
        timing["peak_mem_mb"] = round(peak_memory_mb(loop.device), 1)
        row.update(timing=timing, machine=machine_load(), finished=now_iso())
        return row

    def finish(self) -> dict:
        latest = self.folder.latest_by_key(RESULTS)
        plan = self.plan()
        rows = {u.key: latest[u.key] for u in plan if u.key in latest}
        complete = len(rows) == len(plan)
        summary = self._header()
        summary.update(summarize_cpt(rows, self.contenders, self.config.n_values, self.config.seed))
        summary.update(n_planned_units=len(plan), n_units_with_rows=len(rows), complete=complete,
                       written=now_iso(), train_config=asdict(self.config.train))
        if complete:
            self.folder.write_summary(summary, cpt_table(summary))
        return summary


def summarize_cpt(rows: dict[str, dict], contenders: list[Contender], n_values: list[int],
                  seed: int = 0, reference: str = "base") -> dict:
    """contenders -> {by_n: {N: {accuracy, micro_accuracy, exact_match, f1, n_passages, ...}}}."""
    per_passage: dict[str, dict[int, dict[str, float]]] = {}
    out: dict[str, dict] = {}
    for c in contenders:
        by_n, acc_by_n = {}, {}
        for n in n_values:
            row = rows.get(f"{c.name}|N={n}") if c.adapt else rows.get(f"{c.name}|N=all")
            if row is None or row["status"] != "ok":
                by_n[str(n)] = {"status": "missing" if row is None else "failed",
                                "error": row and row["error"]}
                continue
            ps = row["passages"] if c.adapt else row["passages"][:n]
            acc_by_n[n] = {p["passage_id"]: p["accuracy"] for p in ps}
            verdicts = [float(q["correct"]) for p in ps for q in p["questions"]]
            t = row.get("timing", {})
            entry = {
                "status": "ok",
                "accuracy": mean_ci([p["accuracy"] for p in ps], seed=seed),
                "micro_accuracy": mean_ci(verdicts, seed=seed),
                "exact_match": mean_ci([p["em"] for p in ps], seed=seed),
                "f1": mean_ci([p["f1"] for p in ps], seed=seed),
                "n_passages": len(ps), "n_questions": len(verdicts),
                "n_train_sequences": row.get("n_train_sequences", 0),
                "timing": {k: t.get(k) for k in ("generate_s", "train_s", "answer_s", "grade_s",
                                                  "total_s", "peak_mem_mb")},
            }
            if row.get("train"):
                entry["timing"]["train_steps"] = row["train"]["steps"]
                entry["timing"]["train_tokens"] = row["train"]["tokens"]
            by_n[str(n)] = entry
        per_passage[c.name] = acc_by_n
        ok = [n for n in n_values if by_n[str(n)]["status"] == "ok"]
        top = by_n[str(max(ok))] if ok else None
        out[c.name] = {
            "by_n": by_n, "adapt": c.adapt,
            # The headline (leaderboard) number: accuracy at the largest N that finished.
            "accuracy": top["accuracy"] if top else mean_ci([]),
            "n_at": max(ok) if ok else None,
            "n_failed": sum(1 for n in n_values if by_n[str(n)]["status"] == "failed"),
        }
    paired: dict[str, dict] = {}
    if reference in per_passage:
        for name, acc_by_n in per_passage.items():
            if name == reference:
                continue
            for n, mine in acc_by_n.items():
                ref = per_passage[reference].get(n)
                common = sorted(set(mine) & set(ref or {}))
                if common:
                    paired.setdefault(name, {})[str(n)] = paired_difference(
                        [mine[p] for p in common], [ref[p] for p in common], seed=seed)
    return {"n_values": list(n_values), "contenders": out, f"paired_vs_{reference}": paired,
            "reference": reference}


def cpt_table(summary: dict) -> str:
    ns = summary["n_values"]
    lines = [f"### {summary.get('task', '')} · cpt · model {summary.get('model', '')} · grader "
             f"{summary.get('grader', '')}", "",
             "| contender | " + " | ".join(f"N={n} acc % [95% CI]" for n in ns) + " |",
             "|---|" + "---|" * len(ns)]
    for name, s in summary["contenders"].items():
        cells = [fmt_ci(s["by_n"][str(n)].get("accuracy", {})) for n in ns]
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    lines += ["", "One adapter per (contender, N) trained on the first N passages together; CIs: 95% "
              "bootstrap over the N passages."]
    return "\n".join(lines) + "\n"


# ----------------------------------------------------------------------------------- continual
@dataclass
class SeqUnit:
    contender: Contender
    sequence: int

    @property
    def key(self) -> str:
        return f"{self.contender.name}|seq={self.sequence}"


class ContinualRun(_ProtocolRun):
    """K sequential merged edits over S seeded random sequences (see the module docstring)."""

    config: ContinualConfig

    def sequences(self) -> list[list[int]]:
        """Pool indices of each sequence, from a seeded RNG per sequence (stable under resume)."""
        out = []
        for s in range(self.config.n_sequences):
            rng = random.Random(derive_seed(self.config.seed, "continual-sequence", s))
            out.append(rng.sample(range(len(self.passages)), self.config.n_steps))
        return out

    def plan(self) -> list[SeqUnit]:
        return [SeqUnit(c, s) for c in self.contenders if c.adapt for s in range(self.config.n_sequences)]

    def skipped(self) -> dict[str, str]:
        return {c.name: "does not adapt: nothing to merge (its accuracy is row 0 of every matrix)"
                for c in self.contenders if not c.adapt}

    def _execute(self, todo: list[SeqUnit]) -> None:
        seqs = self.sequences()
        bar = _progress(len(todo), "sequences", self.progress)
        try:
            for loop, units, policy_fingerprint in self._groups(todo):
                needed = sorted({i for u in units for i in seqs[u.sequence]})
                edits = self._edits_for(loop, [u.contender for u in units], [self.passages[i] for i in needed])
                base_state = base_weights(loop)  # the model's own weights (the policy's, for SEAL)
                try:
                    for unit in units:
                        bar.set_postfix_str(unit.key)
                        try:
                            row = self._run_sequence(loop, unit, seqs[unit.sequence], edits)
                        finally:
                            restore_base_weights(loop, base_state)
                        if policy_fingerprint:
                            row["policy_fingerprint"] = policy_fingerprint
                        self.folder.append(RESULTS, row)
                        bar.update(1)
                finally:
                    restore_base_weights(loop, base_state)
                    loop.reset(0)
        finally:
            bar.close()

    def _run_sequence(self, loop: InnerLoop, unit: SeqUnit, order: list[int], edits: dict) -> dict:
        c, cfg, K = unit.contender, self.config, self.config.n_steps
        passages = [self.passages[i] for i in order]
        row = {"key": unit.key, "contender": c.name, "sequence": unit.sequence,
               "passage_ids": [p.id for p in passages], "status": "ok", "error": None, "steps": []}
        matrix: list[list[float | None]] = [[None] * K for _ in range(K + 1)]
        start = time.perf_counter()
        try:
            loop.reset(0)  # B = 0: the adapter is a no-op, so this is the (restored) base model
            t0: dict = {}
            for j, r in enumerate(self._answer_many(loop, c, passages, t0)):
                matrix[0][j] = r["accuracy"]
            row["steps"].append({"step": 0, "timing": t0, "evals": _compact(self._last)})
            for k in range(1, K + 1):
                p = passages[k - 1]
                seed = derive_seed(cfg.seed, f"{c.name}|{p.id}|0")  # the single protocol's seed
                step = {"step": k, "passage_id": p.id, "seed": seed}
                timing = {"generate_s": 0.0, "train_s": 0.0, "merge_s": 0.0, "answer_s": 0.0, "grade_s": 0.0}
                texts = self._texts(c, [p], edits, step, timing)
                loop.reset(seed)
                stats = loop.train(texts, cfg.train, seed=seed)
                timing["train_s"] = stats.seconds
                t = time.perf_counter()
                loop.merge_into_base()
                timing["merge_s"] = time.perf_counter() - t
                for j, r in enumerate(self._answer_many(loop, c, passages[:k], timing)):
                    matrix[k][j] = r["accuracy"]
                timing["peak_mem_mb"] = round(peak_memory_mb(loop.device), 1)
                step.update(train={kk: v for kk, v in stats.to_dict().items() if kk != "epoch_losses"},
                            timing=timing, evals=_compact(self._last))
                row["steps"].append(step)
        except _RECORDED as err:
            row.update(status="failed", error=_failure(err))
        row.update(matrix=matrix, total_s=time.perf_counter() - start, machine=machine_load(),
                   finished=now_iso())
        return row

    def _answer_many(self, loop, c, passages, timing, use_base=False):
        self._last = super()._answer_many(loop, c, passages, timing, use_base)
        return self._last

    def finish(self) -> dict:
        latest = self.folder.latest_by_key(RESULTS)
        plan = self.plan()
        rows = [latest[u.key] for u in plan if u.key in latest]
        complete = len(rows) == len(plan)
        summary = self._header()
        summary.update(summarize_continual(rows, [c.name for c in self.contenders if c.adapt],
                                           self.config.n_steps, self.config.seed))
        summary.update(n_steps=self.config.n_steps, n_sequences=self.config.n_sequences,
                       pool_size=len(self.passages), skipped=self.skipped(), n_planned_units=len(plan),
                       n_units_with_rows=len(rows), complete=complete, written=now_iso(),
                       train_config=asdict(self.config.train))
        if complete:
            self.folder.write_summary(summary, continual_table(summary))
        return summary


def _compact(results: list[dict]) -> list[dict]:
    """Per-passage evaluation records kept in a continual row (answers kept for re-grading)."""
    return [{"passage_id": r["passage_id"], "accuracy": r["accuracy"],
             "answers": [[q["prediction"], q["correct"]] for q in r["questions"]]} for r in results]


def base_weights(loop: InnerLoop) -> dict[str, torch.Tensor]:
    """A copy of every frozen weight a LoRA merge can change (the layers' base weights and biases)."""
    return {n: p.detach().clone() for n, p in loop.model.named_parameters()
            if not p.requires_grad and ".base_layer." in n}


@torch.no_grad()
def restore_base_weights(loop: InnerLoop, state: dict[str, torch.Tensor]) -> None:
    params = dict(loop.model.named_parameters())
    for n, t in state.items():
        params[n].copy_(t)


def _mean_std(values: list[float]) -> tuple[float | None, float | None]:
    if not values:
        return None, None
    m = fmean(values)
    return m, math.sqrt(fmean([(v - m) ** 2 for v in values]))


def summarize_continual(rows: list[dict], contenders: list[str], K: int, seed: int = 0) -> dict:
    """Per contender: the (K+1) x K mean and std matrices over finished sequences (null = not
    evaluated), retention curves and forgetting, per-step timing."""
    out = {}
    for name in contenders:
        mine = [r for r in rows if r["contender"] == name]
        ok = [r for r in mine if r["status"] == "ok"]
        mean = [[None] * K for _ in range(K + 1)]
        std = [[None] * K for _ in range(K + 1)]
        for i in range(K + 1):
            for j in range(K):
                vals = [r["matrix"][i][j] for r in ok if r["matrix"][i][j] is not None]
                mean[i][j], std[i][j] = _mean_std(vals)
        final = [fmean([v for v in r["matrix"][K] if v is not None]) for r in ok]
        # Accuracy on the passages edited so far, after each step (row mean); row 0 = all K, unedited.
        seen_curve = [_mean_std([fmean(r["matrix"][k][:k]) for r in ok])[0] if k else
                      _mean_std([fmean(r["matrix"][0]) for r in ok])[0] for k in range(K + 1)]
        # Retention by age: accuracy on a passage `a` edits after its own edit (a=0: just edited).
        by_age = [_mean_std([r["matrix"][j + 1 + a][j] for r in ok for j in range(K - a)])[0]
                  for a in range(K)]
        just = [mean[j + 1][j] for j in range(K)]
        last = [mean[K][j] for j in range(K)]
        forgetting = (fmean([a - b for a, b in zip(just, last)])
                      if ok and all(v is not None for v in just + last) else None)
        steps = [s for r in ok for s in r["steps"] if s["step"] > 0]
        timing = {}
        for key in ("generate_s", "train_s", "merge_s", "answer_s", "grade_s"):
            vals = [s["timing"][key] for s in steps if s["timing"].get(key) is not None]
            if vals:
                timing[key] = {"median": sorted(vals)[len(vals) // 2], "mean": fmean(vals), "n": len(vals)}
        if steps:
            timing["train_steps"] = {"median": sorted(s["train"]["steps"] for s in steps)[len(steps) // 2]}
            timing["train_tokens"] = {"median": sorted(s["train"]["tokens"] for s in steps)[len(steps) // 2]}
            timing["peak_mem_mb"] = {"max": max(s["timing"].get("peak_mem_mb", 0) for s in steps)}
            totals = [sum(s["timing"].get(k, 0.0) for k in ("generate_s", "train_s", "merge_s", "answer_s",
                                                           "grade_s")) for s in steps]
            timing["total_s"] = {"median": sorted(totals)[len(totals) // 2], "mean": fmean(totals),
                                 "n": len(totals)}
        out[name] = {
            "matrix_mean": mean, "matrix_std": std, "n_sequences": len(ok), "n_failed": len(mine) - len(ok),
            "errors": sorted({r["error"] for r in mine if r["status"] != "ok"})[:5],
            # Headline: mean accuracy over all K passages after the K-th edit, CI over sequences.
            "accuracy": mean_ci(final, seed=seed),
            "accuracy_before": mean_ci([fmean(r["matrix"][0]) for r in ok], seed=seed),
            "accuracy_just_edited": _mean_std([v for v in just if v is not None])[0],
            "forgetting": forgetting, "seen_curve": seen_curve, "retention_by_age": by_age,
            "timing": timing,
        }
    return {"contenders": out, "std": "population std over sequences (ddof=0)"}


def continual_table(summary: dict) -> str:
    K = summary["n_steps"]
    lines = [f"### {summary.get('task', '')} · continual · model {summary.get('model', '')} · K={K}, "
             f"S={summary['n_sequences']}", ""]
    for name, s in summary["contenders"].items():
        lines += [f"**{name}** — final accuracy {fmt_ci(s['accuracy'])} over {s['n_sequences']} sequences",
                  "", "| after edit | " + " | ".join(f"p{j}" for j in range(K)) + " |",
                  "|---|" + "---|" * K]
        for i in range(K + 1):
            cells = ["" if m is None else f"{m * 100:.1f} ± {sd * 100:.1f}"
                     for m, sd in zip(s["matrix_mean"][i], s["matrix_std"][i])]
            lines.append(f"| {i} | " + " | ".join(cells) + " |")
        lines.append("")
    lines.append("Row k = after the k-th merged edit; column j = the j-th passage of the sequence; "
                 "mean ± std (%) over sequences.")
    return "\n".join(lines) + "\n"


def table_for(summary: dict) -> str:
    """The Markdown table `sealbench run` prints at the end, for any knowledge protocol."""
    from .summary import knowledge_table

    protocol = summary.get("protocol", "single")
    if protocol == "cpt":
        return cpt_table(summary)
    if protocol == "continual":
        return continual_table(summary)
    return knowledge_table(summary)


def failures(summary: dict) -> tuple[int, str | None]:
    """(number of failed units, first error) of a knowledge summary of any protocol."""
    n, first = 0, None
    for s in summary.get("contenders", {}).values():
        n += s.get("n_failed", 0)
        for e in s.get("errors", []) + [v.get("error") for v in s.get("by_n", {}).values() if v.get("error")]:
            first = first or e
    return n, first
