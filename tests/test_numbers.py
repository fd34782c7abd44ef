"""Numbers a researcher can trust (issue 25): n with several self-edits per item, per-edit times
that add up, the same unit's rows whatever it was batched with."""
from __future__ import annotations

from sealbench.families.squad.metrics import _accuracy_rows, per_question


BASE = dict(run_id="r", task="seal_squad_nocontext", protocol="single", model="m", contender="c",
            grader="match", eval_set="e")


def _row(pid: str, verdicts: list[bool]) -> dict:
    return {"status": "ok", "questions": [
        {"passage_id": pid, "question": f"q{i}", "correct": v, "em": float(v), "f1": float(v),
         "prediction": "a b" if v else "a"} for i, v in enumerate(verdicts)]}


def test_micro_accuracy_counts_each_question_once_with_two_self_edits():
    # 3 passages x 3 questions = 9 questions, k = 2 self-edits each: 6 rows, 18 answers
    rows = []
    for p in range(3):
        rows.append(_row(f"p{p}", [True, True, False]))
        rows.append(_row(f"p{p}", [True, False, False]))
    got = {r["metric"]: r for r in _accuracy_rows(BASE, rows, {"p0": 0.5, "p1": 0.5, "p2": 0.5}, 0)}
    assert got["micro_accuracy"]["n"] == 9
    assert abs(got["micro_accuracy"]["value"] - 0.5) < 1e-9
    assert got["answer_words"]["n"] == 9
    # a question's two answers are averaged first: values 1, 0.5, 0 per passage
    assert sorted(per_question(rows)) == [0.0] * 3 + [0.5] * 3 + [1.0] * 3


def test_micro_accuracy_with_one_self_edit_is_the_plain_mean():
    rows = [_row("p0", [True, False]), _row("p1", [True, True])]
    got = {r["metric"]: r for r in _accuracy_rows(BASE, rows, {"p0": 0.5, "p1": 1.0}, 0)}
    assert got["micro_accuracy"]["n"] == 4 and abs(got["micro_accuracy"]["value"] - 0.75) < 1e-9
