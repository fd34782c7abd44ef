"""Procedures written once (issue 23): the timing rows of both families and of migrate, answer ->
cut -> grade for episodes and continual sequences, and the dry run's training plan, which is the
engine's own (engine/train.py `schedule` and `buckets`, the bank's cap on a pass)."""
from __future__ import annotations

import json
import math
from types import SimpleNamespace

import pytest

from sealbench.config import LoRASettings, TrainSettings
from sealbench.engine.lora import AdapterBank
from sealbench.engine.train import CPU_PASS_TOKENS, EditJob, QueueMeter, encode, train_queue
from sealbench.estimate import NO_CAP, Rates, plan_training, simulate_training, step_passes
from sealbench.families.arc import metrics as arc_metrics
from sealbench.families.base import Work
from sealbench.families.squad import continual, metrics as squad_metrics
from sealbench.families.squad.data import Passage, Question
from sealbench.families.squad.episode import AnswerSettings, Episode, run_episodes
from sealbench.grading import get_grader
from sealbench.report import migrate

RUN = dict(run_id="r", protocol="single", model="m", eval_set="e", contender="c", role="contender")
NAN = float("nan")


# ----------------------------------------------------------------------------------- timing rows
def _units() -> list[dict]:
    return [
        {"key": "u1", "contender": "c", "status": "ok", "n_ttt_examples": 12, "train": {"steps": 4, "tokens": 40},
         "timing": {"generate_s": 1.0, "train_s": 2.0, "answer_s": 0.5, "grade_s": 0.25, "peak_mem_mb": 100.0}},
        {"key": "u2", "contender": "c", "status": "ok", "n_ttt_examples": 0, "train": {"steps": 6, "tokens": 60},
         "timing": {"generate_s": 3.0, "train_s": 4.0, "answer_s": 1.5, "grade_s": 0.75, "peak_mem_mb": 300.0}},
        {"key": "u3", "contender": "c", "status": "ok", "n_ttt_examples": 8, "train": None,
         "timing": {"generate_s": 2.0, "train_s": 6.0, "answer_s": 1.0}},   # no grade_s, no peak
    ]


def _table(rows: list[dict]) -> dict[str, tuple]:
    return {r["metric"]: (r["value"], r["ci_low"], r["ci_high"], r["n"], r["unit"]) for r in rows}


def test_timing_rows_are_one_procedure_for_both_families_and_migrate(tmp_path):
    squad = squad_metrics._timing_rows(dict(RUN, task="seal_squad_nocontext", grader="match"), _units())
    assert [r["metric"] for r in squad] == ["seconds_per_edit", "generate_s", "train_s", "answer_s", "grade_s",
                                           "train_steps", "train_tokens", "peak_mem_mb"]
    got = _table(squad)
    assert got["seconds_per_edit"] == (9.0, 6.375, 9.125, 3, "edits")  # 3.75, 9.25, 9.0: a missing key is 0
    assert got["grade_s"] == (0.5, 0.375, 0.625, 2, "edits")
    assert got["train_steps"] == (5.0, 4.5, 5.5, 2, "edits") and got["train_tokens"][:4] == (50.0, 45.0, 55.0, 2)
    peak = got["peak_mem_mb"]
    assert peak[0] == 300.0 and peak[3] == 2 and math.isnan(peak[1]) and math.isnan(peak[2])  # the max

    arc = arc_metrics.timing_rows(dict(RUN, task="seal_arc_fewshot", grader="exact-grid"), _units())
    assert [r["metric"] for r in arc] == ["seconds_per_edit", "generate_s", "train_s", "answer_s", "train_steps",
                                         "ttt_examples", "peak_mem_mb"]
    got_arc = _table(arc)
    assert got_arc["seconds_per_edit"] == (8.5, 6.0, 8.75, 3, "edits")  # generate + data + train + answer
    assert got_arc["ttt_examples"] == (10.0, 9.0, 11.0, 2, "edits")     # rows with examples only
    for metric in ("generate_s", "train_s", "answer_s", "train_steps"):
        assert got_arc[metric] == got[metric]

    # migrate reads the same unit rows from results.jsonl: the same numbers, keys sorted
    (tmp_path / "results.jsonl").write_text("".join(json.dumps(r) + "\n" for r in _units()))
    common = dict(RUN, task="seal_squad_nocontext", grader="match")
    migrated = migrate.timing_rows(common, migrate._samples_from_results(tmp_path, "c"))
    assert [r["metric"] for r in migrated] == ["answer_s", "generate_s", "grade_s", "peak_mem_mb", "train_s",
                                              "train_steps", "train_tokens"]
    for metric, row in _table(migrated).items():
        assert row[:4] == pytest.approx(got[metric][:4], nan_ok=True) and row[4] == "edits", metric


def test_continual_step_timings_use_the_same_rows():
    ok = [{"matrix": [[0.0], [1.0]], "steps": [{"timing": {"train_s": 1.0, "merge_s": 0.5, "answer_s": 2.0}}]},
          {"matrix": [[0.0], [0.0]], "steps": [{"timing": {"train_s": 3.0, "answer_s": 4.0}}]}]
    rows = squad_metrics._continual(SimpleNamespace(steps=1, seed=0), dict(RUN, task="seal_squad_nocontext",
                                                                              protocol="continual", grader="match"), ok)
    got = _table([r for r in rows if r["metric"].endswith("_s")])
    assert got == {"train_s": (2.0, 1.5, 2.5, 2, "edits"), "merge_s": (0.5, 0.5, 0.5, 1, "edits"),
                   "answer_s": (3.0, 2.5, 3.5, 2, "edits")}


# ----------------------------------------------------------------------------- answer, cut, grade
class _Engine:
    """Generation that answers from a table (raw text per prompt), for the answering procedure."""
    tokenizer, device = None, "cpu"

    def __init__(self, raws: dict[str, str]):
        self.raws, self.requests = raws, []

    def generate(self, requests, stop_strings=None):
        self.requests += requests
        return [next(raw for key, raw in self.raws.items() if key in r.prompt) for r in requests]

    def train_queue(self, jobs, flush_at=None):
        return iter(())


def test_episodes_and_continual_sequences_answer_cut_and_grade_alike():
    passages = [Passage("p:0", "Place", "Place was founded in 1807 by the mayor.",
                        [Question("When was Place founded?", ["1807"]), Question("Who founded Place?", ["the mayor"])])]
    raws = {"When": "1807 it was.\nQuestion: and then?", "Who": "a farmer\n\nQuestion: more"}
    answer, grader = AnswerSettings(max_tokens=7), get_grader("match")

    episode_engine = _Engine(raws)
    (row,) = run_episodes(episode_engine, [Episode("e", passages, None, seed=0)], TrainSettings(), answer, grader)
    qs = row["questions"]
    assert [q["prediction"] for q in qs] == ["1807 it was.", "a farmer"]  # cut at the stops
    assert [q["correct"] for q in qs] == [True, False] and row["accuracy"] == 0.5

    sequence_engine = _Engine(raws)
    rows = [{"status": "ok", "matrix": [[None], [None]]}]
    continual._evaluate(sequence_engine, [SimpleNamespace(items=passages)], rows, 0, answer, grader, base=True)
    assert rows[0]["answers"]["0"] == [[0, q["prediction"], q["correct"], q["em"], q["f1"]] for q in qs]
    assert rows[0]["matrix"][0][0] == 0.5
    assert [(r.prompt, r.slot, r.max_new_tokens) for r in sequence_engine.requests] == \
        [(r.prompt, r.slot, r.max_new_tokens) for r in episode_engine.requests]


# ------------------------------------------------------------------------- the dry run's plan
LORA = LoRASettings(r=4, alpha=8)
TEXTS = [["alpha " * 5, "beta " * 20, "gamma " * 12], ["delta " * 30, "epsilon " * 3],
         ["zeta " * 8] * 4 + ["eta " * 25], ["theta " * 15]]


def test_a_pass_over_max_tokens_is_split_as_the_engine_splits_it():
    groups = [[30, 30], [30, 30]]
    assert step_passes(groups, CPU_PASS_TOKENS) == [120]                  # one pass is cheapest
    assert step_passes(groups, CPU_PASS_TOKENS, max_tokens=100) == [60, 60]  # over the cap: split
    assert step_passes([[40, 40], [9]], CPU_PASS_TOKENS, max_tokens=90) == [9, 80]  # a pass pads to its own rows
    rates = Rates(a=1.0, b=0.0, c=0.0, g=0.0, q=0.0, load_s=0.0)
    work = Work([30, 30], TrainSettings(batch_size=2, epochs=3), [], 0)
    assert simulate_training([work, work], 2, rates, CPU_PASS_TOKENS) == 3.0               # a pass a step
    assert simulate_training([work, work], 2, rates, CPU_PASS_TOKENS, max_tokens=100) == 6.0  # two


@pytest.mark.parametrize("cap", [NO_CAP, 80])
def test_the_dry_runs_passes_are_the_engines(tiny, cap):
    """The dry run's plan for a batch of edits (their lengths as `encode` gives them) has the steps,
    passes and padded tokens that the engine's training of the same edits takes, with the bank's
    cap on a pass (80 tokens: passes split) or without."""
    settings = TrainSettings(batch_size=2, epochs=2)
    jobs = [EditJob(texts, settings, 0) for texts in TEXTS]
    works = [Work([len(ids) for ids, _ in encode(tiny.tokenizer, job.texts, settings.max_length)], settings, [], 0)
             for job in jobs]
    plan = plan_training(works, len(jobs), CPU_PASS_TOKENS, max_tokens=cap)
    bank = AdapterBank(tiny.model, len(jobs), LORA)
    try:
        bank.static_tokens, bank.eager_tokens = 0, cap  # the memory plan, as on a device that caps a pass
        meter = QueueMeter()
        for _ in train_queue(bank, tiny.tokenizer, jobs, flush_at=len(jobs), longest_first=False,
                             pass_overhead=CPU_PASS_TOKENS, meter=meter, static=False):
            pass
    finally:
        bank.remove()
    assert meter.steps == len(plan)
    assert meter.passes == sum(len(passes) for passes, _ in plan)
    assert meter.padded_tokens == sum(sum(passes) for passes, _ in plan)
    uncapped = plan_training(works, len(jobs), CPU_PASS_TOKENS)
    if cap < NO_CAP:  # the cap bites: more passes than the same plan without it
        assert sum(map(len, (p for p, _ in plan))) > sum(map(len, (p for p, _ in uncapped)))
