"""Running the knowledge benchmark (single-passage protocol): plan -> self-edits -> inner loop -> grades.

One *unit* is (contender, passage, edit index): write or fetch the self-edit, reset the adapter,
train it on the edit's sequences, answer the passage's questions closed-book, grade. Each finished
unit is one row in `results.jsonl`; a re-run skips units that already have a successful row, so a
killed run resumes where it stopped and the result does not depend on where it was interrupted
(every unit's randomness comes from a seed derived from the run seed and the unit's key).
"""
from __future__ import annotations

import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch

from . import knowledge
from .contenders import Contender, load_contender, with_overrides
from .inner_loop import InnerLoop, LoRAConfig, TrainConfig, TrainingError, format_prompt, peak_memory_mb
from .knowledge import Passage
from .models import LoadedModel, load_model
from .notes import EndpointNotes, FileNotes, NotesError, sample_self_notes
from .runfolder import RunFolder, build_manifest, derive_seed, machine_load, now_iso
from .summary import summarize_knowledge, knowledge_table

RESULTS = "results.jsonl"
SELF_EDITS = "self_edits.jsonl"


@dataclass
class KnowledgeConfig:
    """Everything that decides a knowledge run's numbers (hashed into the run-id)."""
    task: str = "seal_squad_nocontext"
    protocol: str = "single"
    contenders: list[str] = field(default_factory=lambda: ["base", "passage"])
    model: str = "embedded"
    n_passages: int = 10
    seed: int = 0
    device: str = "auto"
    dtype: str = "auto"
    answer_style: str = "plain"      # SEAL's base-model prompt as plain text; `chat` wraps it
    notes_style: str = "auto"        # self-edit prompt: chat template when the model has one
    max_answer_tokens: int = 64
    answer_batch_size: int = 32
    notes_batch_size: int = 8
    grader: str = "match"
    k: int | None = None             # overrides notes.k of every note-writing contender
    notes_max_tokens: int | None = None
    seal_preset: str | None = None   # overrides policy.preset of the `seal` contender
    max_statements: int = 256        # a self-edit with more lines is recorded as invalid
    lora: LoRAConfig = field(default_factory=LoRAConfig)
    train: TrainConfig = field(default_factory=TrainConfig)


class RunError(RuntimeError):
    """A whole-run problem (bad config, no data): one clear line for the user."""


@dataclass
class Unit:
    contender: Contender
    passage: Passage
    edit_index: int

    @property
    def key(self) -> str:
        return f"{self.contender.name}|{self.passage.id}|{self.edit_index}"


class KnowledgeRun:
    def __init__(self, config: KnowledgeConfig, reports_dir: str | Path = "reports",
                 data: str | None = None, loaded: LoadedModel | None = None, progress: bool = True):
        self.config = config
        self.data = data
        self.progress = progress
        self.contenders = [with_overrides(load_contender(name), config.k, config.notes_max_tokens,
                                          config.seal_preset) for name in config.contenders]
        for c in self.contenders:
            if c.task != config.task:
                raise RunError(f"contender {c.name!r} is for task {c.task!r}, not {config.task!r}")
        try:
            self.passages = knowledge.seal_eval_passages(config.n_passages, data)
        except knowledge.DataError as err:
            raise RunError(str(err)) from None
        if len(self.passages) < config.n_passages:
            raise RunError(f"--n-passages {config.n_passages} asked, but the data has only "
                           f"{len(self.passages)} evaluation passages")
        # A policy contender's whole RL config is part of this run's identity: a different
        # RL preset means different notes, so a different run folder.
        self.rl_configs = {c.name: self._rl_config(c) for c in self.contenders if c.notes.source == "policy"}
        self.resolved = {
            **asdict(config),
            "contenders": [{**c.to_dict(), **({"rl": asdict(self.rl_configs[c.name])} if c.name in self.rl_configs else {})}
                           for c in self.contenders],
            "passage_ids": [p.id for p in self.passages],
        }
        self._loaded = loaded
        self.folder = RunFolder.for_config(reports_dir, self._folder_name(), self.resolved)
        from .grading import get_grader

        self.grader = get_grader(config.grader)

    def _folder_name(self) -> str:
        """Run folders are named <task>-<model>-<config hash> (protocols add their name)."""
        return f"{self.config.task}-{self.config.model}"

    def _rl_config(self, c: Contender):
        from .rl import load_preset

        options = dict(c.policy)
        preset = options.pop("preset", "cpu")
        try:
            return load_preset(preset, model=self.config.model, seed=self.config.seed,
                               device=self.config.device, dtype=self.config.dtype, grader=self.config.grader,
                               answer_style=self.config.answer_style, notes_style=self.config.notes_style,
                               **options)
        except (ValueError, TypeError) as err:
            raise RunError(f"contender {c.name!r}: {err}") from None

    # ------------------------------------------------------------------------------ plan
    def plan(self) -> list[Unit]:
        return [Unit(c, p, e) for p in self.passages for c in self.contenders
                for e in range(c.edits_per_passage)]

    def pending(self) -> list[Unit]:
        done = {k for k, row in self.folder.latest_by_key(RESULTS).items() if row["status"] == "ok"}
        return [u for u in self.plan() if u.key not in done]

    # ------------------------------------------------------------------------------ run
    def run(self) -> dict:
        todo = self.pending()
        if todo:
            self._execute(todo)
        return self.finish()

    def _model(self) -> LoadedModel:
        if self._loaded is None:
            self._loaded = load_model(self.config.model, self.config.device, self.config.dtype)
        return self._loaded

    def _execute(self, todo: list[Unit]) -> None:
        loaded = self._model()
        if not (self.folder.path / "manifest.json").exists():
            self.folder.write_manifest(build_manifest(self.resolved, loaded.describe(), loaded.device))
        # Contenders adapt the base model, except policy contenders (SEAL), whose RL-trained policy
        # writes the notes and is itself the model being adapted.
        base_units = [u for u in todo if u.contender.name not in self.rl_configs]
        if base_units:
            self._execute_on(InnerLoop(loaded, self.config.lora), base_units)
        for name, rl_config in self.rl_configs.items():
            units = [u for u in todo if u.contender.name == name]
            if units:
                policy = self._policy(rl_config)
                self._execute_on(InnerLoop(policy, self.config.lora), units, policy.fingerprint)

    def _policy(self, rl_config) -> LoadedModel:
        """Train the SEAL policy for this RL config, or reuse a finished one in the reports dir."""
        from .rl import SealTrainer

        trainer = SealTrainer(rl_config, self.folder.path.parent, self.data, progress=self.progress)
        return trainer.train()

    def _rl_summaries(self) -> dict:
        """Per policy contender: its RL run's per-round rewards and held-out accuracies."""
        from .rl import SealTrainer

        out = {}
        for name, rl_config in self.rl_configs.items():
            rl = SealTrainer(rl_config, self.folder.path.parent, self.data, progress=False).summary()
            if rl:
                out[name] = {"run_id": rl["run_id"], "rounds": rl.get("rounds", []), "heldout": rl.get("heldout", [])}
        return out

    def _execute_on(self, loop: InnerLoop, todo: list[Unit], policy_fingerprint: str | None = None) -> None:
        edits = self._self_edits(loop, todo)
        bar = _progress(len(todo), "units", self.progress)
        try:
            for unit in todo:
                bar.set_postfix_str(f"{unit.contender.name} · {unit.passage.title[:24]}")
                row = self._run_unit(loop, unit, edits.get(unit.key))
                if policy_fingerprint:
                    row["policy_fingerprint"] = policy_fingerprint
                self.folder.append(RESULTS, row)
                bar.update(1)
        finally:
            bar.close()

    # ------------------------------------------------------------------------------ self-edits
    def _self_edits(self, loop: InnerLoop, todo: list[Unit]) -> dict[str, dict]:
        """Every pending unit's self-edit, generated (batched) or fetched, cached in self_edits.jsonl."""
        cached = self.folder.latest_by_key(SELF_EDITS)
        wanted = [u for u in todo if u.contender.needs_notes]
        missing: dict[str, list[Passage]] = {}
        for u in wanted:
            if u.key not in cached or cached[u.key].get("error"):  # failed fetches are retried
                missing.setdefault(u.contender.name, [])
                if u.passage not in missing[u.contender.name]:
                    missing[u.contender.name].append(u.passage)
        by_name = {c.name: c for c in self.contenders}
        for name, passages in missing.items():
            for row in self._generate_notes(loop, by_name[name], passages):
                self.folder.append(SELF_EDITS, row)
                cached[row["key"]] = row
        return cached

    def _generate_notes(self, loop: InnerLoop, contender: Contender, passages: list[Passage]):
        spec = contender.notes
        if spec.source in ("self", "policy"):
            # Fixed chunks of the *full* passage list, each with its own seed, so a resumed run
            # samples exactly what an uninterrupted one would have.
            index = {p.id: i for i, p in enumerate(self.passages)}
            size = self.config.notes_batch_size
            chunks: dict[int, list[Passage]] = {}
            for p in passages:
                chunks.setdefault(index[p.id] // size, []).append(p)
            bar = _progress(len(passages), f"notes:{contender.name}", self.progress)
            for chunk_id, _ in sorted(chunks.items()):
                full_chunk = self.passages[chunk_id * size:(chunk_id + 1) * size]
                start = time.perf_counter()
                completions = sample_self_notes(loop, full_chunk, spec, self.config.notes_style,
                                                seed=derive_seed(self.config.seed, contender.name, "notes", chunk_id))
                per_edit = (time.perf_counter() - start) / (len(full_chunk) * spec.k)
                for p, comps in zip(full_chunk, completions):
                    for e, text in enumerate(comps):
                        yield {"key": f"{contender.name}|{p.id}|{e}", "text": text, "error": None,
                               "generate_s": per_edit}
                bar.update(len(full_chunk))
            bar.close()
            return
        source = FileNotes(spec, self.data) if spec.source == "file" else EndpointNotes(spec)
        for p in passages:
            start = time.perf_counter()
            try:
                comps, error = source.notes_for(p), None
            except NotesError as err:
                comps, error = [None] * spec.k, str(err)
            per_edit = (time.perf_counter() - start) / spec.k
            for e, text in enumerate(comps):
                yield {"key": f"{contender.name}|{p.id}|{e}", "text": text, "error": error,
                       "generate_s": per_edit}

    # ------------------------------------------------------------------------------ one unit
    def _run_unit(self, loop: InnerLoop, unit: Unit, edit: dict | None) -> dict:
        c, p, cfg = unit.contender, unit.passage, self.config
        seed = derive_seed(cfg.seed, unit.key)
        row = {"key": unit.key, "contender": c.name, "passage_id": p.id, "title": p.title,
               "edit_index": unit.edit_index, "seed": seed, "status": "ok", "error": None,
               "self_edit": None, "n_train_sequences": 0, "train": None, "finished": None}
        timing = {"generate_s": 0.0, "train_s": 0.0, "answer_s": 0.0, "grade_s": 0.0}
        start = time.perf_counter()
        try:
            if c.adapt:
                texts = self._training_texts(c, p, edit, row, timing)
                loop.reset(seed)
                stats = loop.train(texts, cfg.train, seed=seed)
                row["train"] = stats.to_dict()
                timing["train_s"] = stats.seconds
            row["questions"] = self._answer(loop, c, p, timing)
        except (NotesError, TrainingError, ValueError) as err:
            row.update(status="failed", error=str(err))
        except torch.cuda.OutOfMemoryError:
            row.update(status="failed", error="out of GPU memory: lower --batch-size/--answer-batch-size "
                                              "or use a smaller model")
        if row["status"] == "ok":
            qs = row["questions"]
            row["accuracy"] = sum(q["correct"] for q in qs) / len(qs)
            row["em"] = sum(q["em"] for q in qs) / len(qs)
            row["f1"] = sum(q["f1"] for q in qs) / len(qs)
        timing["total_s"] = time.perf_counter() - start + timing["generate_s"]
        timing["peak_mem_mb"] = round(peak_memory_mb(loop.device), 1)
        row["timing"] = timing
        row["machine"] = machine_load()
        row["finished"] = now_iso()
        return row

    def _training_texts(self, c: Contender, p: Passage, edit: dict | None, row: dict, timing: dict) -> list[str]:
        if not c.needs_notes:
            return knowledge.training_texts(p, [], include_passage=True)
        if edit is None or edit.get("error"):
            raise NotesError(edit["error"] if edit else f"no self-edit was produced for {row['key']}")
        text = edit["text"] or ""
        row["self_edit"] = text
        timing["generate_s"] = edit.get("generate_s", 0.0)
        statements = knowledge.split_self_edit(text, c.notes.prompt)
        if len(statements) > self.config.max_statements:
            raise NotesError(f"self-edit for {row['key']} has {len(statements)} statements (limit "
                             f"{self.config.max_statements}); raise --max-statements or shorten the notes")
        if not statements:
            row["warning"] = "self-edit is empty: trained on the passage alone"
        texts = knowledge.training_texts(p, [text], c.notes.prompt, include_passage=c.include_passage)
        row["n_train_sequences"] = len(texts)
        return texts

    def _answer(self, loop: InnerLoop, c: Contender, p: Passage, timing: dict) -> list[dict]:
        from .grading import exact_match, f1_score

        if not p.questions:
            raise ValueError(f"passage {p.id} ({p.title!r}) has no questions to answer")
        prompts = [format_prompt(loop.tokenizer, knowledge.answer_prompt(p, q, c.answer_with_context),
                                 self.config.answer_style) for q in p.questions]
        t = time.perf_counter()
        if c.adapt:
            answers = loop.generate(prompts, self.config.max_answer_tokens, self.config.answer_batch_size)
        else:
            with loop.base_model():
                answers = loop.generate(prompts, self.config.max_answer_tokens, self.config.answer_batch_size)
        timing["answer_s"] = time.perf_counter() - t
        t = time.perf_counter()
        out = []
        for q, a in zip(p.questions, answers):
            out.append({"question": q.question, "golds": q.answers, "prediction": a,
                        "correct": bool(self.grader.grade(q.question, q.answers, a)),
                        "em": exact_match(a, q.answers), "f1": f1_score(a, q.answers)})
        timing["grade_s"] = time.perf_counter() - t
        return out

    # ------------------------------------------------------------------------------ summary
    def finish(self) -> dict:
        """Write summary.json/summary.md if every planned unit has a row; return the summary."""
        latest = self.folder.latest_by_key(RESULTS)
        plan = self.plan()
        rows = [latest[u.key] for u in plan if u.key in latest]
        complete = len(rows) == len(plan)
        summary = summarize_knowledge(rows, [c.name for c in self.contenders], self.config.seed)
        summary.update(run_id=self.folder.path.name, task=self.config.task, protocol=self.config.protocol,
                       model=self.config.model, grader=self.config.grader, n_planned_units=len(plan),
                       n_units_with_rows=len(rows), complete=complete, written=now_iso())
        manifest_path = self.folder.path / "manifest.json"
        if manifest_path.exists():
            import json
            manifest = json.loads(manifest_path.read_text())
            summary["model_fingerprint"] = manifest["model"]["fingerprint"]
            summary["device_name"] = manifest.get("device_name")
        rl = self._rl_summaries()
        if rl:
            summary["seal_rl"] = rl
        if complete:
            self.folder.write_summary(summary, knowledge_table(summary))
        return summary


def _progress(total: int, desc: str, enabled: bool):
    from tqdm.auto import tqdm

    return tqdm(total=total, desc=desc, unit="edit" if desc == "units" else "passage",
                disable=not enabled, dynamic_ncols=True, smoothing=0.1)
