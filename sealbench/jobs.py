"""Jobs: one flat dict of settings → one run. `sealbench run` builds one job from its flags;
`sealbench run --all --preset NAME` reads a list of them from presets/all/NAME.yaml.

Keeping a single path from settings to a run means a preset file and a command line mean exactly
the same thing (a preset job can be pasted as flags and vice versa).
"""
from __future__ import annotations

from dataclasses import fields
from pathlib import Path

from .inner_loop import LoRAConfig, TrainConfig
from .presets import read_preset

PRESETS_DIR = Path(__file__).resolve().parent.parent / "presets" / "all"
KNOWLEDGE_TASK = "seal_squad_nocontext"
ARC_TASKS = ("seal_arc_fewshot", "seal_arc_mini")

# job key -> meaning; None values mean "the protocol's default".
JOB_KEYS = {
    "task", "protocol", "contenders", "n_passages", "model", "device", "dtype", "seed", "grader", "k",
    "notes_max_tokens", "max_statements", "seal_preset", "epochs", "lr", "batch_size", "grad_accum_steps",
    "lora_r", "lora_alpha", "answer_style", "notes_style", "max_answer_tokens", "cpt_n", "steps",
    "sequences", "arc",
}


class JobError(ValueError):
    pass


def load_all_preset(name_or_path: str) -> list[dict]:
    try:
        path, raw = read_preset(PRESETS_DIR, name_or_path, "preset")
    except ValueError as err:
        raise JobError(str(err)) from None
    defaults, jobs = raw.get("defaults", {}), raw.get("jobs", [])
    if not jobs:
        raise JobError(f"{path} lists no jobs")
    out = []
    for i, job in enumerate(jobs):
        merged = {**defaults, **job}
        unknown = set(merged) - JOB_KEYS
        if unknown:
            raise JobError(f"{path}: job {i} has unknown key(s) {sorted(unknown)}")
        out.append(merged)
    return out


def knowledge_config(job: dict):
    """The protocol's config dataclass for a knowledge job; unset keys keep the protocol's defaults."""
    from .protocols import make_config

    protocol = job.get("protocol") or "single"
    cfg = {}
    for key in ("contenders", "n_passages", "model", "device", "dtype", "seed", "grader", "k",
                "notes_max_tokens", "max_statements", "seal_preset", "answer_style", "notes_style",
                "max_answer_tokens"):
        if job.get(key) is not None:
            cfg[key] = list(dict.fromkeys(job[key])) if key == "contenders" else job[key]
    cfg["task"] = job.get("task") or KNOWLEDGE_TASK
    if protocol == "cpt" and job.get("cpt_n"):
        cfg["n_values"] = list(job["cpt_n"])
    if protocol == "continual":
        for key, field_name in (("steps", "n_steps"), ("sequences", "n_sequences")):
            if job.get(key) is not None:
                cfg[field_name] = job[key]
    config = make_config(protocol, **cfg)
    train_over = {f: job[k] for k, f in (("epochs", "epochs"), ("lr", "learning_rate"),
                                         ("batch_size", "batch_size"), ("grad_accum_steps", "grad_accum_steps"))
                  if job.get(k) is not None}
    if train_over:
        base = {f.name: getattr(config.train, f.name) for f in fields(TrainConfig)}
        config.train = TrainConfig(**{**base, **train_over})
    if job.get("lora_r") is not None or job.get("lora_alpha") is not None:
        config.lora = LoRAConfig(r=job.get("lora_r") or config.lora.r, alpha=job.get("lora_alpha") or config.lora.alpha)
    return config


def run_job(job: dict, reports_dir: str, data: str | None, progress: bool = True, loaded=None,
            announce=None) -> tuple[Path, dict, str]:
    """Run (or resume) one job; returns (run folder, summary, Markdown table)."""
    task = job.get("task") or KNOWLEDGE_TASK
    if task in ARC_TASKS:
        return _run_arc_job(task, job, reports_dir, data, progress, loaded, announce)
    if task != KNOWLEDGE_TASK:
        raise JobError(f"unknown task {task!r}; available: {KNOWLEDGE_TASK}, {', '.join(ARC_TASKS)}")
    from .protocols import protocol_run, table_for

    config = knowledge_config(job)
    run = protocol_run(config.protocol, config, reports_dir, data, loaded=loaded, progress=progress)
    if announce:
        announce(f"run folder: {run.folder.path}  ({len(run.pending())} of {len(run.plan())} units to do)")
    summary = run.run()
    return run.folder.path, summary, table_for(summary)


def _run_arc_job(task: str, job: dict, reports_dir: str, data: str | None, progress: bool, loaded,
                 announce) -> tuple[Path, dict, str]:
    """An ARC job: common keys (contenders, model, seed, device, dtype) plus an `arc:` mapping of
    ArcConfig fields (tasks, n_tasks, k, ttt, lora, ...); `arc: {budget: cpu}` applies the CPU budgets."""
    from .arc.run import ArcRun, ArcRunError, arc_table, config_from_dict, cpu_budget

    raw = {k: job[k] for k in ("contenders", "model", "seed", "device", "dtype") if job.get(k) is not None}
    arc = dict(job.get("arc") or {})
    budget = arc.pop("budget", None)
    try:
        config = config_from_dict({"task": task, **raw, **arc})
        if budget == "cpu":
            config = cpu_budget(config)
        elif budget is not None:
            raise JobError(f"unknown ARC budget {budget!r}; use cpu or leave it out")
        run = ArcRun(config, reports_dir, data, loaded, progress, None)
        if announce:
            announce(f"run folder: {run.folder.path}")
        summary = run.run()
    except (ArcRunError, TypeError) as err:
        raise JobError(str(err)) from None
    return run.folder.path, summary, arc_table(summary)
