"""The ARC benchmark run: plan -> self-edits -> TTT -> prediction -> score (mirrors runner.py).

One *unit* is (contender, task, edit index). Each finished unit is one row in `results.jsonl`;
a re-run with the same config finds its run folder (RunFolder, hashed from the config) and skips
units that already have a row, so a killed run resumes. Every unit's randomness comes from
`derive_seed(run seed, unit key)` and all orders are lists, so numbers do not depend on
PYTHONHASHSEED or on where a run was interrupted.

Entry points:
  * `run_arc(config, reports_dir, data_dir, loaded=None, progress=True) -> summary dict`
  * `arc_table(summary) -> Markdown`
  * `sample_configs` / `evaluate_edit`: the pieces the ARC RL loop (arc/rl.py) rewards self-edits with.
"""
from __future__ import annotations

import json
import time
from dataclasses import asdict, dataclass, field, fields, replace
from pathlib import Path

import torch
import yaml

from ..inner_loop import InnerLoop, LoRAConfig, TrainingError, format_prompt, peak_memory_mb, resolve_prompt_style
from ..models import LoadedModel, load_model
from ..runfolder import RunFolder, build_manifest, derive_seed, machine_load, now_iso
from ..stats import fmt_ci, mean_ci
from . import data as D
from .guided import guided_configs
from .self_edit import ParsedEdit, check_budget, edit_prompt, parse_config
from .ttt import TTTSettings, build_ttt_data, predict, score, train_ttt, transforms_of

RESULTS = "results.jsonl"
SELF_EDITS = "self_edits.jsonl"
TASK_NAMES = ("seal_arc_fewshot", "seal_arc_mini")
CONFIG_SOURCES = ("none", "fixed", "self", "policy")
EDIT_FORMATS = ("free", "guided")
SEAL_LORA = LoRAConfig(r=128, alpha=16, dropout=0.0,
                       target_modules=("q_proj", "v_proj", "gate_proj", "up_proj", "down_proj"))


class ArcRunError(RuntimeError):
    """A whole-run problem (bad config, missing data or policy): one clear line for the user."""


# ------------------------------------------------------------------------------------ contenders
@dataclass
class ArcContender:
    name: str
    task: str = "arc"
    description: str = ""
    adapt: bool = True
    configs: str = "self"            # none | fixed | self | policy
    config: dict | None = None       # for configs: fixed (SEAL's JSON shape)
    k: int = 1                       # self-edits per task (configs: self | policy)
    temperature: float = 1.0
    top_p: float = 0.95
    max_new_tokens: int = 256

    @property
    def edits_per_task(self) -> int:
        return self.k if self.configs in ("self", "policy") else 1

    def to_dict(self) -> dict:
        return asdict(self)


def arc_baselines_dir() -> Path:
    return Path(__file__).resolve().parents[2] / "baselines" / "arc"


def load_arc_contender(name_or_path: str) -> ArcContender:
    path = Path(name_or_path)
    if not path.suffix:
        path = arc_baselines_dir() / f"{name_or_path}.yaml"
        if not path.exists():
            known = ", ".join(sorted(p.stem for p in arc_baselines_dir().glob("*.yaml")))
            raise ArcRunError(f"unknown ARC contender {name_or_path!r}; available: {known} (or a path to a .yaml)")
    try:
        raw = yaml.safe_load(path.read_text())
    except (OSError, yaml.YAMLError) as err:
        raise ArcRunError(f"cannot read ARC contender {path}: {err}") from None
    known = {f.name for f in fields(ArcContender)}
    if not isinstance(raw, dict) or "name" not in raw or set(raw) - known:
        raise ArcRunError(f"{path}: an ARC contender needs `name:` and only the fields {sorted(known)}")
    c = ArcContender(**raw)
    if c.configs not in CONFIG_SOURCES:
        raise ArcRunError(f"{path}: configs must be one of {CONFIG_SOURCES}, got {c.configs!r}")
    if c.configs == "fixed":
        parsed = parse_config(json.dumps(c.config))
        if not parsed.valid:
            raise ArcRunError(f"{path}: its fixed config is invalid: {parsed.reason}")
    return c


# ------------------------------------------------------------------------------------ config
@dataclass
class ArcConfig:
    """Everything that decides an ARC run's numbers (hashed into the run-id)."""
    task: str = "seal_arc_fewshot"        # seal_arc_fewshot | seal_arc_mini
    tasks: str | None = None              # task set spec (data.load_tasks); default by `task`
    contenders: list[str] = field(default_factory=lambda: ["icl", "ttt-self-edit", "oracle"])
    model: str = "embedded"
    policy_model: str | None = None       # a ready RL-trained policy for `seal`; unset: train it (arc/rl.py)
    rl_tasks: str | None = None           # RL training tasks (default: seal-train, or mini-train for mini)
    rl_n_tasks: int | None = None         # first n of them
    n_tasks: int | None = None            # first n tasks of the set (mini: how many to generate)
    mini_rules: list[str] | None = None   # generated tiers: rules to cycle through (default: all)
    mini_size: list[int] | None = None    # generated tiers: [min, max] input side (default: per rule)
    k: int | None = None                  # overrides k of self/policy contenders
    seed: int = 0
    device: str = "auto"
    dtype: str = "auto"
    edit_style: str = "auto"              # self-edit prompt: chat template when the model has one
    edit_max_tokens: int | None = None    # overrides contenders' max_new_tokens
    edit_format: str = "free"             # free: the model writes the JSON (SEAL) | guided: picks values
    lora: LoRAConfig = field(default_factory=lambda: replace(SEAL_LORA))
    ttt: TTTSettings = field(default_factory=TTTSettings)
    keep_completions: bool = False        # store every raw prediction completion in the rows


def cpu_budget(config: ArcConfig) -> ArcConfig:
    """Budgets that make a CPU run finish: few TTT examples, short answers, 4 voting transforms."""
    ttt = replace(config.ttt, cap=12, step_budget=24, max_length=512, max_new_tokens=160,
                  predict_transforms=("identity", "flip_lr", "rot180", "transpose"), gen_batch_size=8)
    return replace(config, ttt=ttt, lora=LoRAConfig(r=16, alpha=32, target_modules=SEAL_LORA.target_modules),
                   k=config.k or 2, edit_max_tokens=config.edit_max_tokens or 160)


def config_from_dict(raw: dict) -> ArcConfig:
    """An ArcConfig from plain data (e.g. a JSON/YAML file or CLI flags); nested lora/ttt dicts allowed."""
    raw = dict(raw)
    lora = raw.pop("lora", None)
    ttt = raw.pop("ttt", None)
    cfg = ArcConfig(**raw)
    if lora:
        lora = dict(lora)
        if "target_modules" in lora:
            lora["target_modules"] = tuple(lora["target_modules"])
        cfg.lora = LoRAConfig(**lora)
    if ttt:
        ttt = dict(ttt)
        for key in ("leave", "predict_transforms"):
            if key in ttt:
                ttt[key] = tuple(ttt[key])
        cfg.ttt = TTTSettings(**ttt)
    return cfg


# ------------------------------------------------------------------------------------ units
@dataclass
class Unit:
    contender: ArcContender
    task: D.ArcTask
    edit_index: int

    @property
    def key(self) -> str:
        return f"{self.contender.name}|{self.task.id}|{self.edit_index}"


def check_edit_format(edit_format: str) -> None:
    if edit_format not in EDIT_FORMATS:
        raise ArcRunError(f"edit_format must be one of {', '.join(EDIT_FORMATS)}, got {edit_format!r}")


def sample_configs(loop: InnerLoop, tasks: list[D.ArcTask], k: int, seed: int, temperature: float = 1.0,
                   top_p: float = 0.95, max_new_tokens: int = 256, style: str = "auto",
                   batch_size: int = 8, edit_format: str = "free") -> dict[str, list[dict]]:
    """k sampled self-edit completions per task: {task_id: [{prompt, text, generate_s}, ...]}.

    `edit_format`: `free` (SEAL: the model writes the JSON) or `guided` (the model picks each field's
    value among the allowed ones, arc/guided.py). Each task is sampled with its own seed, so the
    result for a task does not depend on which other tasks are sampled with it (resume-safe)."""
    check_edit_format(edit_format)
    out = {}
    for t in tasks:
        prompt = format_prompt(loop.tokenizer, edit_prompt(t.train), style)
        start = time.perf_counter()
        with loop.base_model():
            if edit_format == "guided":
                texts = guided_configs(loop, prompt, k, derive_seed(seed, t.id), temperature)
            else:
                texts = loop.generate([prompt] * k, max_new_tokens, batch_size, do_sample=True,
                                      temperature=temperature, top_p=top_p, seed=derive_seed(seed, t.id))
        per = (time.perf_counter() - start) / max(k, 1)
        out[t.id] = [{"prompt": prompt, "text": text, "generate_s": per} for text in texts]
    return out


def evaluate_edit(loop: InnerLoop, task: D.ArcTask, edit: ParsedEdit | None, settings: TTTSettings,
                  seed: int, keep_completions: bool = False) -> dict:
    """Run one self-edit on one task: validate/budget, TTT, predict, score. `edit=None`: ICL.

    Returns a record with `edit_status` (icl | ok | invalid | over_budget | train_error),
    `solved`, `reward` (1.0 solved, else 0.0), training stats and timings."""
    rec = {"edit_status": "icl" if edit is None else edit.status, "reason": None if edit is None else edit.reason,
           "config": edit.config.to_dict() if edit is not None and edit.config else None,
           "n_ttt_examples": 0, "train": None, "predictions": None, "test_solved": [], "solved": False,
           "reward": 0.0}
    timing = {"data_s": 0.0, "train_s": 0.0, "predict_s": 0.0}
    rec["timing"] = timing
    if task.test_outputs is None:
        raise ArcRunError(f"task {task.id} has no solutions: cannot score it")
    if edit is not None:
        if not edit.valid:
            return rec
        t = time.perf_counter()
        tok = loop.tokenizer
        examples = build_ttt_data(task.train, transforms_of(edit.config), settings, seed=seed,
                                  length_fn=lambda s: len(tok(s, add_special_tokens=True)["input_ids"]) + 1)
        timing["data_s"] = time.perf_counter() - t
        rec["n_ttt_examples"] = len(examples)
        check_budget(edit, len(examples), settings.step_budget, settings.batch_size)
        rec["edit_status"], rec["reason"] = edit.status, edit.reason
        if not edit.valid:
            return rec
        if not examples:
            rec.update(edit_status="invalid", reason="no TTT examples fit max_length")
            return rec
        loop.reset(seed)
        try:
            stats = train_ttt(loop, examples, edit.config, settings, seed=seed)
        except TrainingError as err:
            rec.update(edit_status="train_error", reason=str(err))
            loop.reset(seed)
            return rec
        rec["train"] = stats.to_dict()
        timing["train_s"] = stats.seconds
    t = time.perf_counter()
    preds = predict(loop, task.train, task.test_inputs, settings, use_base=edit is None)
    timing["predict_s"] = time.perf_counter() - t
    s = score(preds, task.test_outputs)
    if not keep_completions:
        for p in preds:
            p["completions"] = p["completions"][:2]
    rec.update(predictions=preds, test_solved=s["test_solved"], solved=s["solved"], reward=float(s["solved"]))
    return rec


# ------------------------------------------------------------------------------------ the run
class ArcRun:
    def __init__(self, config: ArcConfig, reports_dir: str | Path = "reports", data_dir: str | None = None,
                 loaded: LoadedModel | None = None, progress: bool = True, policy: LoadedModel | None = None):
        if config.task not in TASK_NAMES:
            raise ArcRunError(f"unknown ARC task {config.task!r}; use one of {', '.join(TASK_NAMES)}")
        self.config, self.data_dir, self.progress = config, data_dir, progress
        self.contenders = [load_arc_contender(n) for n in config.contenders]
        for c in self.contenders:
            if config.k is not None and c.configs in ("self", "policy"):
                c.k = config.k
            if config.edit_max_tokens is not None:
                c.max_new_tokens = config.edit_max_tokens
        spec = config.tasks or ("seal-eval" if config.task == "seal_arc_fewshot" else "mini")
        try:
            self.tasks = D.load_tasks(spec, data_dir, config.n_tasks, config.seed, config.mini_rules,
                                      config.mini_size)
        except D.ArcDataError as err:
            raise ArcRunError(str(err)) from None
        if not self.tasks:
            raise ArcRunError(f"task set {spec!r} is empty")
        check_edit_format(config.edit_format)
        # A policy contender without a given policy trains one (one ReST-EM round, arc/rl.py); its RL
        # config is part of this run's identity, as for knowledge.
        from .rl import rl_config_for_run

        self.rl_configs = {c.name: rl_config_for_run(config, c) for c in self.contenders
                           if c.configs == "policy" and not config.policy_model and policy is None}
        self.resolved = {**asdict(config), "tasks": spec,
                         "contenders": [{**c.to_dict(), **({"rl": asdict(self.rl_configs[c.name])}
                                                           if c.name in self.rl_configs else {})}
                                        for c in self.contenders],
                         "task_ids": [t.id for t in self.tasks]}
        name = f"{config.task}-{Path(str(config.model)).name}"
        self.folder = RunFolder.for_config(reports_dir, name, self.resolved)
        self._loaded, self._policy = loaded, policy
        self.reports_dir = reports_dir
        self._loops: dict[str, InnerLoop] = {}

    def plan(self) -> list[Unit]:
        return [Unit(c, t, e) for t in self.tasks for c in self.contenders for e in range(c.edits_per_task)]

    def pending(self) -> list[Unit]:
        done = {k for k, r in self.folder.latest_by_key(RESULTS).items() if r["status"] == "ok"}
        return [u for u in self.plan() if u.key not in done]

    def _loop(self, which: str) -> InnerLoop:
        if which not in self._loops:
            if which == "policy":
                if self._policy is None and self.config.policy_model:
                    self._policy = load_model(self.config.policy_model, self.config.device, self.config.dtype)
                elif self._policy is None:
                    self._policy = self._trainer().train()
                model = self._policy
            else:
                if self._loaded is None:
                    self._loaded = load_model(self.config.model, self.config.device, self.config.dtype)
                model = self._loaded
            self._loops[which] = InnerLoop(model, self.config.lora)
        return self._loops[which]

    def _trainer(self):
        """The ARC RL trainer of this run's policy contender (trains, or reuses a finished RL run)."""
        from .rl import ArcSealTrainer

        (rl_config,) = self.rl_configs.values()
        try:
            return ArcSealTrainer(rl_config, self.reports_dir, self.data_dir, self.progress)
        except D.ArcDataError as err:
            raise ArcRunError(str(err)) from None

    def run(self) -> dict:
        todo = self.pending()
        if todo:
            base = self._loop("base")
            if not (self.folder.path / "manifest.json").exists():
                manifest = build_manifest(self.resolved, base.loaded.describe(), base.device)
                if any(c.configs == "policy" for c in self.contenders):
                    manifest["policy_model"] = self._loop("policy").loaded.describe()
                self.folder.write_manifest(manifest)
            edits = self._self_edits(todo)
            from tqdm.auto import tqdm
            bar = tqdm(total=len(todo), desc="arc units", unit="edit", disable=not self.progress,
                       dynamic_ncols=True)
            try:
                for u in todo:
                    bar.set_postfix_str(f"{u.contender.name} · {u.task.id}")
                    self.folder.append(RESULTS, self._run_unit(u, edits.get(u.key)))
                    bar.update(1)
            finally:
                bar.close()
        return self.finish()

    def _self_edits(self, todo: list[Unit]) -> dict[str, dict]:
        cached = self.folder.latest_by_key(SELF_EDITS)
        for c in self.contenders:
            if c.configs not in ("self", "policy"):
                continue
            need = []
            for u in todo:
                if u.contender is c and u.key not in cached and u.task not in need:
                    need.append(u.task)
            if not need:
                continue
            loop = self._loop("policy" if c.configs == "policy" else "base")
            style = resolve_prompt_style(loop.tokenizer, self.config.edit_style)
            for t in need:
                got = sample_configs(loop, [t], c.k, derive_seed(self.config.seed, c.name, "edits"),
                                     c.temperature, c.top_p, c.max_new_tokens, style,
                                     edit_format=self.config.edit_format)[t.id]
                for e, s in enumerate(got):
                    row = {"key": f"{c.name}|{t.id}|{e}", "text": s["text"], "generate_s": s["generate_s"],
                           "prompt_style": style}
                    self.folder.append(SELF_EDITS, row)
                    cached[row["key"]] = row
        return cached

    def _run_unit(self, u: Unit, edit_row: dict | None) -> dict:
        c, seed = u.contender, derive_seed(self.config.seed, u.key)
        row = {"key": u.key, "contender": c.name, "task_id": u.task.id, "rule": u.task.rule,
               "edit_index": u.edit_index, "seed": seed, "status": "ok", "error": None, "self_edit": None}
        start = time.perf_counter()
        generate_s = 0.0
        if c.configs == "none":
            edit = None
        elif c.configs == "fixed":
            edit = parse_config(json.dumps(c.config))
        else:
            if edit_row is None:
                raise ArcRunError(f"no self-edit was generated for {u.key}")
            edit = parse_config(edit_row["text"])
            row["self_edit"] = edit_row["text"]
            generate_s = edit_row.get("generate_s", 0.0)
        loop = self._loop("policy" if c.configs == "policy" else "base")
        if c.configs == "policy":
            row["policy_fingerprint"] = loop.loaded.fingerprint
        try:
            rec = evaluate_edit(loop, u.task, edit, self.config.ttt, seed, self.config.keep_completions)
            row.update(rec)
        except torch.cuda.OutOfMemoryError:
            row.update(status="failed", error="out of GPU memory: lower ttt.cap, ttt.max_length or gen_batch_size")
        timing = row.setdefault("timing", {})
        timing["generate_s"] = generate_s
        timing["total_s"] = time.perf_counter() - start + generate_s
        timing["peak_mem_mb"] = round(peak_memory_mb(loop.device), 1)
        row.update(machine=machine_load(), finished=now_iso())
        return row

    def finish(self) -> dict:
        latest = self.folder.latest_by_key(RESULTS)
        plan = self.plan()
        rows = [latest[u.key] for u in plan if u.key in latest]
        summary = summarize_arc(rows, [c.name for c in self.contenders], [t.id for t in self.tasks],
                                self.config.seed)
        complete = len(rows) == len(plan) and all(r["status"] == "ok" for r in rows)
        summary.update(run_id=self.folder.path.name, task=self.config.task, tasks=self.resolved["tasks"],
                       model=self.config.model, n_planned_units=len(plan), n_units_with_rows=len(rows),
                       complete=complete, written=now_iso())
        mpath = self.folder.path / "manifest.json"
        if mpath.exists():
            manifest = json.loads(mpath.read_text())
            summary["model_fingerprint"] = manifest["model"]["fingerprint"]
            summary["device_name"] = manifest.get("device_name")
        if self.rl_configs:
            rl = self._trainer().summary()
            if rl:
                summary["seal_rl"] = {name: {"run_id": rl["run_id"], "rounds": rl.get("rounds", [])}
                                      for name in self.rl_configs}
        if complete:
            self.folder.write_summary(summary, arc_table(summary))
        return summary


def summarize_arc(rows: list[dict], contenders: list[str], task_ids: list[str], seed: int = 0) -> dict:
    """Per contender: pairs solved (SEAL's headline), per-task pass@2, edit validity, timings."""
    out = {"contenders": {}}
    for name in contenders:
        mine = [r for r in rows if r["contender"] == name and r["status"] == "ok"]
        pairs = [float(r["solved"]) for r in mine]
        by_task: dict[str, list[float]] = {}
        for r in mine:
            by_task.setdefault(r["task_id"], []).append(float(r["solved"]))
        per_task = {t: sum(v) / len(v) for t, v in ((t, by_task[t]) for t in task_ids if t in by_task)}
        any_edit = [float(max(by_task[t])) for t in task_ids if t in by_task]
        tests = [float(x) for r in mine for x in r.get("test_solved", [])]
        statuses: dict[str, int] = {}
        for r in mine:
            statuses[r["edit_status"]] = statuses.get(r["edit_status"], 0) + 1
        def mean_of(key):
            vals = [r["timing"].get(key, 0.0) for r in mine]
            return sum(vals) / len(vals) if vals else float("nan")
        out["contenders"][name] = {
            "pairs_solved": mean_ci(pairs, seed=seed),              # fraction of (task, edit) pairs
            "task_pass2": mean_ci(list(per_task.values()), seed=seed),  # mean over tasks of per-task pass@2
            "task_any_edit": mean_ci(any_edit, seed=seed),          # a task solved by at least one edit
            "test_inputs_solved": mean_ci(tests, seed=seed),
            "pass2_by_task": per_task,
            "n_pairs": len(pairs), "n_tasks": len(per_task),
            "edit_status_counts": dict(sorted(statuses.items())),
            "n_invalid": statuses.get("invalid", 0), "n_over_budget": statuses.get("over_budget", 0),
            "n_train_error": statuses.get("train_error", 0),
            "n_failed_units": sum(1 for r in rows if r["contender"] == name and r["status"] != "ok"),
            "time_per_edit_s": {k: mean_of(k) for k in ("generate_s", "data_s", "train_s", "predict_s", "total_s")},
            "mean_ttt_examples": (sum(r.get("n_ttt_examples", 0) for r in mine) / len(mine)) if mine else 0.0,
            "mean_train_steps": (sum((r.get("train") or {}).get("steps", 0) for r in mine) / len(mine)) if mine else 0.0,
        }
    return out


def arc_table(summary: dict) -> str:
    """Markdown: one line per contender, percentages with 95% bootstrap CIs."""
    lines = [f"### {summary.get('task', 'ARC')} — {summary.get('tasks', '')} ({summary.get('model', '')})", "",
             "| contender | pairs solved % | task pass@2 % | any edit % | n pairs | n tasks | invalid | over budget | train err | s / edit |",
             "|---|---|---|---|---|---|---|---|---|---|"]
    for name, s in summary["contenders"].items():
        lines.append(f"| {name} | {fmt_ci(s['pairs_solved'])} | {fmt_ci(s['task_pass2'])} | "
                     f"{fmt_ci(s['task_any_edit'])} | {s['n_pairs']} | {s['n_tasks']} | {s['n_invalid']} | "
                     f"{s['n_over_budget']} | {s['n_train_error']} | {s['time_per_edit_s']['total_s']:.1f} |")
    lines += ["", "pairs solved = fraction of (task, self-edit) pairs whose task is solved (SEAL's metric); "
              "task pass@2 = mean over tasks of the fraction of its edits solving it with 2 attempts; "
              "CIs: 95% bootstrap."]
    for name, rl in (summary.get("seal_rl") or {}).items():
        from ..rl import rl_table

        lines += ["", f"RL run of `{name}` ({rl['run_id']}; reward = task solved; kept = every correct config):",
                  "", rl_table(rl).rstrip()]
    if summary.get("device_name"):
        lines.append(f"device: {summary['device_name']}")
    return "\n".join(lines) + "\n"


def run_arc(config: ArcConfig, reports_dir: str | Path = "reports", data_dir: str | None = None,
            loaded: LoadedModel | None = None, progress: bool = True, policy: LoadedModel | None = None) -> dict:
    """Run (or resume) an ARC benchmark run and return its summary (also written to the run folder)."""
    return ArcRun(config, reports_dir, data_dir, loaded, progress, policy).run()
