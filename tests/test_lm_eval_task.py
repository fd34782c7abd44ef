"""The lm-eval layer: the seal_squad_* tasks load offline through lm-eval, score answers with
sealbench's graders, and the `sealbench` model type runs end to end (docs/lm_eval.md)."""
from __future__ import annotations

import importlib.util
import os
from pathlib import Path

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

pytest.importorskip("lm_eval", reason="lm-eval is not installed (pip install -e '.[full]')")
pytest.importorskip("datasets", reason="the seal_squad tasks build their docs with `datasets`")

from sealbench import knowledge  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
TASKS = REPO / "tasks"
DATA = Path(os.environ.get("SEALBENCH_DATA_DIR") or REPO.parent / "shared" / "data")

pytestmark = pytest.mark.skipif(
    not (DATA / knowledge.DEV_FILE).exists(),
    reason=f"SEAL data not found: {DATA / knowledge.DEV_FILE} is missing "
           "(set SEALBENCH_DATA_DIR to the folder holding squad/)")


@pytest.fixture(scope="module", autouse=True)
def data_env():
    old = os.environ.get("SEALBENCH_DATA_DIR")
    os.environ["SEALBENCH_DATA_DIR"] = str(DATA)
    yield
    if old is None:
        os.environ.pop("SEALBENCH_DATA_DIR", None)
    else:
        os.environ["SEALBENCH_DATA_DIR"] = old


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    """On a shared, busy CPU torch's default thread count can be ~20x slower than one thread."""
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def task_manager():
    from lm_eval.tasks import TaskManager

    return TaskManager(include_path=str(TASKS), metadata={"n_passages": 2})


@pytest.fixture(scope="module")
def tasks(task_manager):
    return task_manager.load(["seal_squad_nocontext", "seal_squad_incontext"])["tasks"]


@pytest.fixture(scope="module")
def utils():
    spec = importlib.util.spec_from_file_location("seal_squad_utils", TASKS / "seal_squad_nocontext" / "utils.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_tasks_are_found_and_load_offline(task_manager, tasks):
    assert {"seal_squad_nocontext", "seal_squad_incontext"} <= set(
        task_manager.match_tasks(["seal_squad_nocontext", "seal_squad_incontext"]))
    passages = knowledge.seal_eval_passages(2, DATA)
    n_questions = sum(len(p.questions) for p in passages)
    for name in ("seal_squad_nocontext", "seal_squad_incontext"):
        docs = list(tasks[name].test_docs())
        assert len(docs) == n_questions
        assert [d["passage_id"] for d in docs[:1]] == [passages[0].id]
        assert docs[0]["title"] == passages[0].title and docs[0]["context"] == passages[0].context
        assert docs[0]["answers"] == passages[0].questions[0].answers


def test_prompts_and_generation_settings(tasks):
    p = knowledge.seal_eval_passages(1, DATA)[0]
    q = p.questions[0]
    for name, with_context in (("seal_squad_nocontext", False), ("seal_squad_incontext", True)):
        task = tasks[name]
        task.build_all_requests(limit=2, rank=0, world_size=1)
        prompt, gen_kwargs = task.instances[0].args
        assert prompt == knowledge.answer_prompt(p, q, with_context=with_context)
        assert gen_kwargs["max_gen_toks"] == 64 and gen_kwargs["do_sample"] is False
        assert "\n\n" in gen_kwargs["until"]
        assert task.instances[0].doc["passage_id"] == p.id
    assert tasks["seal_squad_nocontext"].instances[0].args[0] == (
        "Let's answer a question directly and concisely.\nQuestion: Topic: "
        f"{p.title}\n{q.question}\nAnswer:\n")


def test_process_results_scores_right_and_wrong_answers(tasks, utils):
    task = tasks["seal_squad_nocontext"]
    doc = next(iter(task.test_docs()))
    gold = doc["answers"][0]
    right = task.process_results(doc, [gold])
    assert right["match"] == right["exact_match"] == right["f1"] == 1.0
    assert right["match_passage_mean"] == (doc["passage_id"], 1.0)
    wrong = task.process_results(doc, ["a completely unrelated reply about bananas"])
    assert wrong["match"] == wrong["exact_match"] == wrong["f1"] == 0.0
    # f1 gives partial credit where exact match does not
    partial = task.process_results(doc, [f"I think it is {gold} or so"])
    assert partial["exact_match"] == 0.0 and 0.0 < partial["f1"] < 1.0
    # SEAL's headline number: mean over passages of per-passage accuracy
    assert utils.passage_mean([("a", 1.0), ("a", 0.0), ("b", 1.0)]) == pytest.approx(0.75)


def test_n_passages_from_env(monkeypatch, utils):
    monkeypatch.setenv("SEALBENCH_N_PASSAGES", "1")
    docs = utils.build_docs()
    assert len(docs) == len(knowledge.seal_eval_passages(1, DATA)[0].questions)
    assert len({d["passage_id"] for d in docs}) == 1
    assert len({d["passage_id"] for d in utils.build_docs(3)}) == 3  # metadata beats the env var
    monkeypatch.setenv("SEALBENCH_N_PASSAGES", "zero")
    with pytest.raises(ValueError, match="n_passages"):
        utils.build_docs()


def test_passage_contender_groups_and_resets(tasks):
    """contender=passage on a tiny random model: one adapter per passage, answers in request order."""
    from sealbench.lm_eval_model import SealbenchLM
    from sealbench.models import tiny_random_model

    task = tasks["seal_squad_nocontext"]
    task.build_all_requests(rank=0, world_size=1)
    requests = list(reversed(task.instances))  # interleaving must not matter
    lm = SealbenchLM(model=tiny_random_model(0), contender="passage", epochs=1, device="cpu")
    for r in requests:
        r.arguments = (r.arguments[0], {**r.arguments[1], "max_gen_toks": 4})
    answers = lm.generate_until(requests, disable_tqdm=True)
    assert len(answers) == len(requests) and all(isinstance(a, str) for a in answers)
    assert [rec["passage_id"] for rec in lm.last_run] == list(dict.fromkeys(
        r.doc["passage_id"] for r in requests))
    assert all(rec["train"]["steps"] == 1 for rec in lm.last_run)
    # the adapter is reset after each passage: the model is back to the base
    assert all(float(b.weight.detach().abs().sum()) == 0.0 for layer in lm.loop._lora_layers
               for b in layer.lora_B.values())
    with pytest.raises(NotImplementedError, match="generate_until"):
        lm.loglikelihood(requests[:1])


@pytest.mark.slow
def test_simple_evaluate_end_to_end_base(task_manager):
    """A real lm-eval run: embedded model, contender base, 1 passage, 2 questions."""
    import lm_eval
    from lm_eval.tasks import TaskManager

    import sealbench.lm_eval_model  # noqa: F401  (registers --model sealbench)

    tm = TaskManager(include_path=str(TASKS), metadata={"n_passages": 1})
    out = lm_eval.simple_evaluate(
        model="sealbench", model_args="model=embedded,contender=base,device=cpu,threads=1",
        tasks=["seal_squad_nocontext"], task_manager=tm, limit=2, batch_size=2,
        log_samples=True, bootstrap_iters=0)
    res = out["results"]["seal_squad_nocontext"]
    for metric in ("match", "match_passage_mean", "exact_match", "f1"):
        assert 0.0 <= res[f"{metric},none"] <= 1.0
    samples = out["samples"]["seal_squad_nocontext"]
    assert len(samples) == 2
    assert all(isinstance(s["filtered_resps"][0], str) for s in samples)
    assert out["config"]["sealbench_contender"] == "base"
