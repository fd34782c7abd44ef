"""Graders are not part of what is trained (issue 20): unit keys leave the grader out, every
answer keeps its verdicts by grader, `sealbench grade RUN_DIR --grader NAME` adds a grader to a
finished run without loading a model, and a run with another grader reuses every unit."""
from __future__ import annotations

import json
from pathlib import Path

import pytest

from conftest import write_data_dir
from sealbench.cli import main
from sealbench.config import RunConfig
from sealbench.engine.inner_loop import Engine
from sealbench.regrade import RegradeError, grade_run, grader_version
from sealbench.runner import run
from sealbench.store import RESULTS, read_rows
from test_runner import QUIET, synthetic


@pytest.fixture
def data(tmp_path):
    return write_data_dir(tmp_path / "data", synthetic(3))


def cfg(tmp_path, data, **kw) -> RunConfig:
    base = dict(contenders=["base", "passage"], n_passages=2, epochs=1, max_answer_tokens=6, seed=0,
                data_dir=str(data), reports_dir=str(tmp_path / "reports"), edits_per_batch=4)
    return RunConfig(**{**base, **kw})


def answers(rows):
    return {(r["key"], i): (q["raw"], q["prediction"]) for r in rows for i, q in enumerate(r["questions"])}


def snapshot(folder: Path) -> dict:
    return {p.name: p.read_bytes() for p in sorted(folder.iterdir()) if p.is_file() and not p.name.startswith(".")}


def no_model(monkeypatch):
    """Training or generating from here on fails the test."""
    def refuse(*a, **k):
        raise AssertionError("the model was used")
    monkeypatch.setattr(Engine, "train", refuse)
    monkeypatch.setattr(Engine, "generate", refuse)
    monkeypatch.setattr("sealbench.runner.load_model", refuse)


def test_unit_keys_and_seeds_do_not_depend_on_the_grader(tmp_path, data, tiny):
    from sealbench.runner import prepare
    from sealbench.families.squad import protocols

    keys = {}
    for g in ("match", "em"):
        p = prepare(cfg(tmp_path, data, grader=g))
        sources = type("S", (), {"key_for": lambda self, c, item, i: f"{c.name}|{item.id}|{i}"})()
        keys[g] = [(u.key, u.seed) for u in protocols.plan(p.config, p.contenders, p.items, sources,
                                                             {"base": "fp"})]
    assert keys["match"] == keys["em"]


def test_switching_the_grader_of_a_finished_run_trains_nothing(tmp_path, data, tiny, monkeypatch, capsys):
    r = run(cfg(tmp_path, data), loaded=tiny, **QUIET)
    before = read_rows(r.folder / RESULTS)
    assert all(q["verdicts"]["match"]["correct"] == q["correct"] for row in before for q in row["questions"])
    assert all(row["grader"] == "match" for row in before)
    (r.folder / ".lock").unlink()   # as in a committed folder: grading leaves no lock file behind
    monkeypatch.setattr(Engine, "train", lambda *a, **k: pytest.fail("trained"))
    monkeypatch.setattr(Engine, "generate", lambda *a, **k: pytest.fail("generated"))
    assert main(["grade", str(r.folder), "--grader", "em"]) == 0
    assert "nothing trained" in capsys.readouterr().err
    after = read_rows(r.folder / RESULTS)
    assert len(after) == len(before) and answers(after) == answers(before)
    for b, a in zip(before, after):
        assert a["key"] == b["key"] and a["seed"] == b["seed"] and a["train"] == b["train"]
        assert a["accuracy"] == b["accuracy"] and a["grader"] == "match"   # the run's grader stays on top
        for qb, qa in zip(b["questions"], a["questions"]):
            assert (qa["correct"], qa["reason"]) == (qb["correct"], qb["reason"])
            assert qa["verdicts"]["em"]["correct"] == (qa["em"] == 1.0)
            assert qa["verdicts"]["em"]["version"] == grader_version(__import__("sealbench.grading").grading.get_grader("em"))
    table = read_rows(r.folder / "summary.jsonl")
    graders = {t["grader"] for t in table}
    assert graders == {"match", "em"} and (r.folder / "COMPLETE").exists()
    old = {(t["contender"], t["metric"], t["at"], t["vs"]): t["value"] for t in r.rows}
    mine = {(t["contender"], t["metric"], t["at"], t["vs"]): t["value"] for t in table if t["grader"] == "match"}
    assert mine == old                                       # the run's own numbers did not move
    em = {(t["contender"], t["metric"]): t["value"] for t in table if t["grader"] == "em" and t["vs"] == ""}
    assert em[("passage", "accuracy")] == em[("passage", "exact_match")]
    assert ("base", "answer_words") in em
    # a second call is a no-op: not one byte changes
    snap = snapshot(r.folder)
    assert grade_run(r.folder, "em", say=lambda m: None) == "up to date"
    assert snapshot(r.folder) == snap
    assert not (r.folder / ".lock").exists()


def test_a_run_with_another_grader_reuses_every_unit_and_grades_its_answers(tmp_path, data, tiny, monkeypatch):
    first = run(cfg(tmp_path, data), loaded=tiny, **QUIET)
    no_model(monkeypatch)
    second = run(cfg(tmp_path, data, grader="f1"), loaded=tiny, **QUIET)
    assert second.folder != first.folder and second.n_computed == 0 and second.n_reused == 4
    a, b = read_rows(first.folder / RESULTS), read_rows(second.folder / RESULTS)
    assert [r["key"] for r in a] == [r["key"] for r in b] and answers(a) == answers(b)
    for r in b:
        assert r["grader"] == "f1"
        assert all(q["correct"] == q["verdicts"]["f1"]["correct"] == (q["f1"] >= 0.5) for q in r["questions"])
        assert all("match" in q["verdicts"] for q in r["questions"])


@pytest.mark.parametrize("case,word", [("missing", "not a run folder"), ("unfinished", "not finished"),
                                       ("grader", "unknown grader"), ("continual", "cannot be regraded"),
                                       ("both", "not both"), ("neither", "run folder")])
def test_bad_grade_run_input_is_one_line_and_writes_nothing(tmp_path, data, tiny, capsys, case, word):
    protocol = dict(protocol="continual", steps=1, sequences=1, contenders=["passage"]) if case == "continual" else {}
    r = run(cfg(tmp_path, data, **protocol), loaded=tiny, **QUIET)
    if case == "unfinished":
        (r.folder / "COMPLETE").unlink()
    snap = snapshot(r.folder)
    argv = {"missing": ["grade", str(tmp_path / "nope"), "--grader", "em"],
            "grader": ["grade", str(r.folder), "--grader", "oracle"],
            "both": ["grade", str(r.folder), "--in", "x", "--out", "y"],
            "neither": ["grade"]}.get(case, ["grade", str(r.folder), "--grader", "em"])
    capsys.readouterr()
    rc = main(argv)
    err = [ln for ln in capsys.readouterr().err.splitlines() if ln.strip()]
    assert rc == 2 and len(err) == 1 and err[0].startswith("sealbench: error:"), err
    assert word in err[0], err
    assert snapshot(r.folder) == snap


def test_a_corrupt_question_names_the_row(tmp_path, data, tiny):
    r = run(cfg(tmp_path, data), loaded=tiny, **QUIET)
    rows = read_rows(r.folder / RESULTS)
    del rows[1]["questions"][0]["golds"]
    (r.folder / RESULTS).write_text("".join(json.dumps(x) + "\n" for x in rows))
    snap = snapshot(r.folder)
    with pytest.raises(RegradeError, match=r"results.jsonl:2 .*golds"):
        grade_run(r.folder, "em", say=lambda m: None)
    assert snapshot(r.folder) == snap
