"""Helpers for the lm-eval tasks `seal_arc_fewshot` and `seal_arc_mini` (docs/arc.md).

One doc per (ARC task, test input). The prompt is every demonstration then the query, in sealbench's
grid text format ("{input} -> {output}#\\n" ... "{input} -> "); the model's completion (stopped at
'#') is parsed strictly and compared exactly with the solution. Plain lm-eval gives one attempt per
test input with no test-time training; `sealbench run --task seal_arc_*` adds TTT, voting and two
attempts. Each doc carries the task's demos (JSON) so an adapting model type can train on them first.

Options: ``--metadata '{"tasks": "seal-eval", "n_tasks": 3, "data_dir": "...", "seed": 0}'``
(seal_arc_mini also ``"mini_rules": ["color_map"], "mini_size": [3, 3]``, as in `sealbench run`);
tasks: seal-eval (default for seal_arc_fewshot), seal-train, arc-eval, arc-train, mini (default for
seal_arc_mini), or a path challenges.json[:solutions.json]. Data dir: metadata > $SEALBENCH_DATA_DIR
> <repo>/../shared/data.
"""
from __future__ import annotations

import json
import sys
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[2]
try:
    import sealbench  # noqa: F401
except ImportError:
    sys.path.insert(0, str(REPO_ROOT))

from sealbench.families.arc.data import load_tasks  # noqa: E402
from sealbench.families.arc.grids import answer_text, parse_grid, task_prompt  # noqa: E402


def build_docs(tasks: str = "seal-eval", n_tasks=None, data_dir=None, seed=0, mini_rules=None,
               mini_size=None) -> list[dict]:
    n = int(n_tasks) if n_tasks not in (None, "") else None
    rules = [mini_rules] if isinstance(mini_rules, str) else mini_rules
    size = tuple(int(x) for x in mini_size) if mini_size else None
    docs = []
    for t in load_tasks(tasks, data_dir, n, int(seed or 0), tuple(rules) if rules else None, size):
        for i, (q, a) in enumerate(zip(t.test_inputs, t.test_outputs or [None] * len(t.test_inputs))):
            docs.append({
                "task_id": t.id,
                "test_index": i,
                "n_test": len(t.test_inputs),
                "rule": t.rule or "",
                "prompt": task_prompt(t.train, q),
                "target": answer_text(a) if a is not None else "",
                "demos": json.dumps([[[list(r) for r in i_], [list(r) for r in o]] for i_, o in t.train]),
                "test_input": json.dumps([list(r) for r in q]),
            })
    return docs


def _dataset(docs):
    import datasets

    return {"test": datasets.Dataset.from_list(docs)}


def load_fewshot(tasks=None, n_tasks=None, data_dir=None, seed=0, **_ignored):
    return _dataset(build_docs(tasks or "seal-eval", n_tasks, data_dir, seed))


def load_mini(tasks=None, n_tasks=None, data_dir=None, seed=0, mini_rules=None, mini_size=None, **_ignored):
    return _dataset(build_docs(tasks or "mini", n_tasks or 10, data_dir, seed, mini_rules, mini_size))


def doc_to_text(doc: dict) -> str:
    return doc["prompt"]


def doc_to_target(doc: dict) -> str:
    return doc["target"]


def process_results(doc: dict, results: list) -> dict:
    pred = parse_grid(results[0] if results else "")
    gold = parse_grid(doc["target"])
    correct = float(pred is not None and pred == gold)
    return {"exact_match": correct, "parsed": float(pred is not None),
            "task_solved": (doc["task_id"], correct)}


def task_solved(items) -> float:
    """Fraction of ARC tasks whose every test input is answered exactly."""
    per: dict[str, list[float]] = {}
    for tid, v in items:
        per.setdefault(tid, []).append(float(v))
    return sum(all(v) for v in per.values()) / len(per) if per else float("nan")
