"""The lm-eval layer: the seal_squad_* tasks load offline through lm-eval and score with sealbench's
graders, and `--model sealbench` runs the very unit `sealbench run` runs (same training texts,
seed and verdicts)."""
from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import pytest

pytest.importorskip("lm_eval", reason="lm-eval is not installed (pip install -e '.[test]')")
pytest.importorskip("datasets", reason="the seal_squad tasks build their docs with `datasets`")

from sealbench.config import RunConfig  # noqa: E402
from sealbench.runner import run  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
TASKS = REPO / "tasks"


@pytest.fixture(scope="module")
def task_manager():
    from lm_eval.tasks import TaskManager

    return TaskManager(include_path=str(TASKS), metadata={"n_passages": 2})


@pytest.fixture(scope="module")
def tasks(task_manager, real_data_dir_module):
    return task_manager.load(["seal_squad_nocontext", "seal_squad_incontext"])["tasks"]


@pytest.fixture(scope="module")
def real_data_dir_module():
    from conftest import shared_data_dir

    path = shared_data_dir()
    if path is None:
        pytest.skip("the shared data dir is missing: set SEALBENCH_DATA_DIR to ../shared/data")
    return path


@pytest.fixture(scope="module")
def utils():
    spec = importlib.util.spec_from_file_location("seal_squad_utils", TASKS / "seal_squad_nocontext" / "utils.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_tasks_load_offline_with_one_doc_per_question(tasks):
    docs = list(tasks["seal_squad_nocontext"].test_docs())
    assert len({d["passage_id"] for d in docs}) == 2 and all(d["answers"] for d in docs)
    text = tasks["seal_squad_nocontext"].doc_to_text(docs[0])
    assert text.startswith("Let's answer a question directly and concisely.") and docs[0]["context"] not in text
    assert docs[0]["context"] in tasks["seal_squad_incontext"].doc_to_text(docs[0])


def test_process_results_cuts_and_grades(utils):
    doc = {"question": "When?", "answers": ["1979"], "passage_id": "dev:1"}
    assert utils.process_results(doc, ["1979\n\nQuestion: Topic: next"])["exact_match"] == 1.0
    assert utils.process_results(doc, ["1980"])["match"] == 0.0


def test_lm_eval_and_sealbench_run_the_same_unit(tmp_path, tasks, tiny, real_data_dir_module):
    """teacher-notes through `sealbench run` and through `--model sealbench`: the same unit key,
    seed, training sequences and self-edit, and the same answers and verdicts."""
    from sealbench.integrations.lm_eval import SealbenchLM

    settings = dict(epochs=1, max_answer_tokens=8, seed=3, edits_per_batch=2)
    result = run(RunConfig(contenders=["teacher-notes"], n_passages=2, data_dir=str(real_data_dir_module),
                           reports_dir=str(tmp_path / "r"), **settings), loaded=tiny, progress=False,
                 say=lambda m: None)
    ours = {r["passage_id"]: r for r in map(json.loads, (result.folder / "results.jsonl").read_text().splitlines())}
    task = tasks["seal_squad_nocontext"]
    task.build_all_requests(rank=0, world_size=1)
    requests = list(reversed(task.instances))  # interleaving must not matter
    lm = SealbenchLM(model=tiny, contender="teacher-notes", device="cpu", data_dir=str(real_data_dir_module),
                     **settings)
    answers = lm.generate_until(requests, disable_tqdm=True)
    theirs = {r["passage_id"]: r for r in lm.last_rows}
    assert set(ours) == set(theirs) and len(ours) == 2
    for pid, mine in ours.items():
        other = theirs[pid]
        assert mine["key"] == other["key"] and mine["seed"] == other["seed"]
        assert mine["self_edits"] == other["self_edits"] and mine["n_train_sequences"] == other["n_train_sequences"]
        assert [(q["prediction"], q["correct"]) for q in mine["questions"]] == \
            [(q["prediction"], q["correct"]) for q in other["questions"]]
    by_question = {(q["passage_id"], q["question"]): q["prediction"] for r in ours.values() for q in r["questions"]}
    assert answers == [by_question[(r.doc["passage_id"], r.doc["question"])] for r in requests]
    with pytest.raises(NotImplementedError, match="generate_until"):
        lm.loglikelihood(requests[:1])


def test_lm_eval_threads_default_to_auto_and_progress_is_shown(tmp_path, tasks, tiny, real_data_dir_module, capsys):
    """No `threads`: the same thread count as `sealbench run --threads auto`; generate_until shows
    the self-edits and units bars (an hour-long run must not look hung)."""
    import torch

    from sealbench.engine.models import set_threads
    from sealbench.integrations.lm_eval import SealbenchLM

    before = torch.get_num_threads()
    try:
        torch.set_num_threads(1)
        lm = SealbenchLM(model=tiny, contender="self-notes", device="cpu", data_dir=str(real_data_dir_module),
                         epochs=1, max_answer_tokens=4, notes_max_tokens=8, edits_per_batch=2,
                         reports_dir=str(tmp_path / "r"))
        assert torch.get_num_threads() == set_threads("auto")
        task = tasks["seal_squad_nocontext"]
        task.build_all_requests(rank=0, world_size=1)
        lm.generate_until(list(task.instances))
    finally:
        torch.set_num_threads(before)
    err = capsys.readouterr().err
    assert "self-edits" in err and "units" in err and "2/2" in err


@pytest.mark.slow
def test_simple_evaluate_end_to_end(task_manager, real_data_dir_module):
    """A real lm-eval run: the embedded model, contender base, 1 passage, 2 questions."""
    import lm_eval
    from lm_eval.tasks import TaskManager

    import sealbench.integrations.lm_eval  # noqa: F401  (registers --model sealbench)

    tm = TaskManager(include_path=str(TASKS), metadata={"n_passages": 1})
    out = lm_eval.simple_evaluate(model="sealbench", model_args="model=embedded,contender=base,device=cpu,threads=1",
                                  tasks=["seal_squad_nocontext"], task_manager=tm, limit=2, batch_size=2,
                                  log_samples=True, bootstrap_iters=0)
    res = out["results"]["seal_squad_nocontext"]
    for metric in ("match", "match_passage_mean", "exact_match", "f1"):
        assert 0.0 <= res[f"{metric},none"] <= 1.0
    assert len(out["samples"]["seal_squad_nocontext"]) == 2
    assert out["config"]["sealbench_contender"] == "base"
