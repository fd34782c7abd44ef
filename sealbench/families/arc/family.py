"""The ARC family object (the `Family` contract, families/base.py): tasks -> units -> rows -> the
results table. Its facts (name, tasks, grader) are declared in __init__.py, which config and the
reports read."""
from __future__ import annotations

import torch

from ...engine.inner_loop import peak_memory_mb
from ...schema import eval_set_id
from ..base import Work
from . import NAME, metrics, protocol
from .data import ArcDataError, load_tasks, scorable
from .episode import ArcEpisode, run_episodes
from .guided import sample_edit_texts
from .rl import ArcRL
from .self_edit import edit_prompt, parse_config

DEFAULT_SETS = {"seal_arc_fewshot": "seal-eval", "seal_arc_mini": "mini"}


def task_set(config) -> str:
    """The run's task set: `arc_tasks`, else seal-eval (seal_arc_fewshot) / mini (seal_arc_mini)."""
    return config.arc_tasks or DEFAULT_SETS[config.task]


class ArcFamily:
    name = NAME
    item_noun = "tasks"
    rl = ArcRL()

    def load_items(self, config) -> tuple[list, str]:
        """The run's tasks (data.load_tasks: `arc_tasks` or the task's default set, the first
        `n_tasks`; mini tiers from `seed`, `mini_rules`, `mini_size`) and the eval set id (the set's
        name and the tasks' ids and content digests). Raises ArcDataError (one line) for an unknown
        set, unreadable data, an empty set or tasks without solutions (they cannot be scored)."""
        spec = task_set(config)
        tasks = scorable(load_tasks(spec, config.data_dir, config.n_tasks, config.seed, config.mini_rules,
                                    config.mini_size), spec)
        name = spec if not spec.endswith(".json") and ":" not in spec else "arc-file"
        return tasks, eval_set_id(name, [f"{t.id}@{t.digest}" for t in tasks])

    def plan(self, config, contenders, items, sources, fingerprints):
        return protocol.plan(config, contenders, items, sources, fingerprints)

    def edit_prompt(self, contender, task) -> str:
        """The raw self-edit prompt: the task's demonstrations only, never a test input."""
        return edit_prompt(task.train)

    def sample_edits(self, engine, contender, prompts: list[str], seeds: list[int], config) -> list[str]:
        """One self-edit per (formatted prompt, seed) from the engine's base weights (base model or
        policy): `edit_format` free (temperature / top-p / max tokens from the contender,
        `notes_max_tokens` overrides the max) or guided (guided.py)."""
        return sample_edit_texts(engine, prompts, seeds, config.edit_format, contender.temperature, contender.top_p,
                                 config.notes_max_tokens or contender.max_new_tokens)

    def run(self, engine, units: list, edits: dict, config, grader=None) -> list[dict]:
        """Rows for a batch of units (episode.py); `edits[unit key]` lists (EditRef, edit row)."""
        episodes = []
        for u in units:
            pairs = edits.get(u.key, [])
            (task,) = u.items
            error = next((r["error"] for _, r in pairs if r.get("error")), None)
            edit = parse_config(pairs[0][1].get("text")) if pairs and not error else None
            if u.contender.edits != "none" and not pairs and not error:
                error = "no self-edit was produced for this unit"
            episodes.append(ArcEpisode(u.key, task, edit, u.seed, error))
        try:
            rows = run_episodes(engine, episodes, config.ttt, config.keep_completions)
        except torch.cuda.OutOfMemoryError:
            rows = [{"status": "failed", "error": "out of GPU memory: lower --edits-per-batch, ttt.cap, "
                     "ttt.max_length or --gen-batch-size", "timing": {}} for _ in units]
        for u, row in zip(units, rows):
            pairs = edits.get(u.key, [])
            row.update(contender=u.contender.name, **u.info, seed=u.seed,
                       self_edit=pairs[0][1].get("text") if pairs else None)
            row.setdefault("timing", {})["generate_s"] = float(sum(r.get("generate_s") or 0.0 for _, r in pairs))
            row["timing"].setdefault("peak_mem_mb", round(peak_memory_mb(engine.device), 1))
        return rows

    def summarize(self, config, plan, rows, common):
        return metrics.summarize(config, plan, rows, common)

    # ------------------------------------------------------------------ cost model (estimate.py)
    def workload(self, u, config, tokenizer, sources):
        """What a unit asks of the engine: its TTT examples (a sampled self-edit is assumed to be
        SEAL's human plan) and its voting prompts with their answer budget."""
        import json

        from ...config import TrainSettings
        from .self_edit import ORACLE
        from .ttt import answer_budget, build_ttt_data, prediction_requests, token_lengths, transforms_of

        (task,) = u.items
        budget = answer_budget(tokenizer, task.train, config.ttt.max_new_tokens)
        # a prediction stops at the grid's end marker: about the longest demo answer (the budget is
        # 1.5x that + 16 tokens, ttt.answer_budget)
        rows = [max(1, int((budget - 16) / 1.5))] * len(prediction_requests(task.train, task.test_inputs, config.ttt))
        if not u.contender.adapt:
            return Work([], None, rows, 0)
        edit = parse_config(json.dumps(u.contender.config)) if u.contender.edits == "fixed" else None
        cfg = edit.config if edit is not None and edit.valid else ORACLE
        examples = build_ttt_data(task.train, transforms_of(cfg), config.ttt, seed=0, tokenizer=tokenizer)
        train = TrainSettings(learning_rate=cfg.learning_rate, epochs=cfg.num_train_epochs,
                              batch_size=config.ttt.batch_size, max_length=config.ttt.max_length)
        return Work(token_lengths(tokenizer, examples), train, rows, 0)

    def calibration_prompts(self, items, config, tokenizer) -> list[str]:
        return []

    def answer(self, engine, prompts, config) -> list[str]:
        return []


FAMILY = ArcFamily()
__all__ = ["FAMILY", "ArcDataError", "ArcFamily", "task_set"]
