"""The lm-eval tasks seal_arc_fewshot / seal_arc_mini load offline and score exact grids."""
from __future__ import annotations

import os
from pathlib import Path

import pytest

pytest.importorskip("lm_eval", reason="lm-eval is not installed")
pytest.importorskip("datasets")

REPO = Path(__file__).resolve().parents[1]
DATA = Path(os.environ.get("SEALBENCH_DATA_DIR") or REPO.parent / "shared" / "data")


@pytest.fixture(scope="module")
def tasks():
    if not (DATA / "arc").exists():
        pytest.skip(f"ARC data not found under {DATA}")
    old = os.environ.get("SEALBENCH_DATA_DIR")
    os.environ["SEALBENCH_DATA_DIR"] = str(DATA)
    from lm_eval.tasks import TaskManager
    tm = TaskManager(include_path=str(REPO / "tasks"), metadata={"n_tasks": 2})
    yield tm.load(["seal_arc_fewshot", "seal_arc_mini"])["tasks"]
    if old is None:
        os.environ.pop("SEALBENCH_DATA_DIR", None)
    else:
        os.environ["SEALBENCH_DATA_DIR"] = old


def test_arc_tasks_load_and_score(tasks):
    from sealbench.families.arc.data import mini_tasks, seal_tasks
    from sealbench.families.arc.grids import task_prompt

    few, mini = tasks["seal_arc_fewshot"], tasks["seal_arc_mini"]
    fdocs, mdocs = list(few.test_docs()), list(mini.test_docs())
    assert [d["task_id"] for d in fdocs] == [t.id for t in seal_tasks("evaluation", DATA)[:2] for _ in t.test_inputs]
    assert [d["task_id"] for d in mdocs] == [t.id for t in mini_tasks(2)]
    t0 = mini_tasks(2)[0]
    mini.build_all_requests(limit=1, rank=0, world_size=1)
    prompt, gen = mini.instances[0].args
    assert prompt == task_prompt(t0.train, t0.test_inputs[0]) and gen["until"] == ["#"]
    d = mdocs[0]
    right = mini.process_results(d, [d["target"].rstrip("#")])      # lm-eval strips the stop string
    assert right["exact_match"] == 1.0 and right["task_solved"] == (d["task_id"], 1.0)
    assert mini.process_results(d, ["no grid here"])["parsed"] == 0.0
