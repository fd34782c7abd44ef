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
    assert json.loads((r.folder / "manifest.json").read_text())["unit_keys"]["scheme"] == "grader-free"
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
    assert sorted(r["key"] for r in a) == sorted(r["key"] for r in b) and answers(a) == answers(b)
    for r in b:
        assert r["grader"] == "f1"
        assert all(q["correct"] == q["verdicts"]["f1"]["correct"] == (q["f1"] >= 0.5) for q in r["questions"])
        assert all("match" in q["verdicts"] for q in r["questions"])


@pytest.mark.parametrize("old,kept", [("match-0123456789", "match@0123456789"),
                                      ("legacy@f811eeccad02", "match@legacy")])
def test_a_newer_version_of_the_run_grader_replaces_its_verdicts_and_keeps_the_old_ones(
        tmp_path, data, tiny, monkeypatch, old, kept):
    """As for the committed 200-passage run graded by an older `match`: `sealbench grade --grader
    match` redoes every verdict, the run's numbers follow the new version, and the old verdicts and
    rows are kept under `match@legacy` / `match@<old hash>`, which the leaderboard does not rank."""
    from sealbench.report import compare, leaderboard

    r = run(cfg(tmp_path, data), loaded=tiny, **QUIET)
    (r.folder / ".lock").unlink()
    rows = read_rows(r.folder / RESULTS)
    for row in rows:   # an older rule set: other version, every verdict the other way
        for q in row["questions"]:
            q["correct"] = not q["correct"]
            q["reason"] = "old rule"
            q["verdicts"]["match"] = {"correct": q["correct"], "reason": "old rule", "version": old}
        row["accuracy"] = sum(float(q["correct"]) for q in row["questions"]) / len(row["questions"])
    (r.folder / RESULTS).write_text("".join(json.dumps(x) + "\n" for x in rows))
    old_table = read_rows(r.folder / "summary.jsonl")
    no_model(monkeypatch)
    assert grade_run(r.folder, "match", say=lambda m: None) == "graded"
    version = grader_version(__import__("sealbench.grading").grading.get_grader("match"))
    after = read_rows(r.folder / RESULTS)
    assert answers(after) == answers(rows)
    for b, a in zip(rows, after):
        assert a["grader"] == "match" and a["accuracy"] == pytest.approx(1.0 - b["accuracy"])
        for qb, qa in zip(b["questions"], a["questions"]):
            assert qa["verdicts"]["match"]["version"] == version and qa["correct"] == (not qb["correct"])
            assert qa["verdicts"][kept] == qb["verdicts"]["match"]
    table = read_rows(r.folder / "summary.jsonl")
    key = lambda t: (t["contender"], t["metric"], t["at"], t["vs"])   # noqa: E731
    assert {key(t): t["value"] for t in table if t["grader"] == "match"} == {key(t): t["value"] for t in r.rows}
    assert [{**t, "grader": "match"} for t in table if t["grader"] == kept] == old_table
    assert table[0]["grader"] == "match"   # the run's grader stays on top
    snap = snapshot(r.folder)
    assert grade_run(r.folder, "match", say=lambda m: None) == "up to date"
    assert snapshot(r.folder) == snap and not (r.folder / ".lock").exists()
    root = tmp_path / "reports"
    lb = Path(leaderboard.leaderboard([root], tmp_path / "lb", make_plots=False)["md"]).read_text()
    assert "accuracy % (match) [95% CI]" in lb and kept not in lb
    cmp = Path(compare.compare(root, tmp_path / "c", make_plots=False, grader="match")["md"]).read_text()
    assert f"· grader {kept} ·" not in cmp and f"match (the run's grader) vs {kept}" in cmp
    assert f"· grader {kept} ·" in Path(compare.compare(root, tmp_path / "c2", make_plots=False,
                                                         grader=kept)["md"]).read_text()
    assert main(["view", str(r.folder), "--out", str(tmp_path / "v.html"), "--grader", kept]) == 0


@pytest.mark.parametrize("case,word", [("missing", "not a run folder"), ("unfinished", "not finished"),
                                       ("grader", "unknown grader"), ("continual", "continual run"),
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


# ----------------------------------------------------------------------------------- reports
def test_compare_leaderboard_and_view_say_which_grader_each_number_used(tmp_path, data, tiny):
    from sealbench.report import compare, leaderboard, view
    from sealbench.report.view_items import ViewError

    r = run(cfg(tmp_path, data), loaded=tiny, **QUIET)
    grade_run(r.folder, "em", say=lambda m: None)
    root = tmp_path / "reports"
    both = Path(compare.compare(root, tmp_path / "c1", make_plots=False)["md"]).read_text()
    assert "grader match" in both and "grader em" in both
    assert "## Graders compared" in both and "agreement %" in both and "bias (em − match, points)" in both
    assert "answer_words" in both
    only = Path(compare.compare(root, tmp_path / "c2", make_plots=False, grader="em")["md"]).read_text()
    assert "grader em" in only and "· grader match ·" not in only
    lb = Path(leaderboard.leaderboard([root], tmp_path / "lb", make_plots=False, grader="em")["md"]).read_text()
    assert "accuracy % (em) [95% CI]" in lb and "(match)" not in lb and "answer words" in lb and "F1 rank" in lb
    lb_all = Path(leaderboard.leaderboard([root], tmp_path / "lb2", make_plots=False)["md"]).read_text()
    assert "accuracy % (match) [95% CI]" in lb_all and "accuracy % (em) [95% CI]" in lb_all
    with pytest.raises(ValueError, match="sealbench grade <run folder> --grader judge"):
        leaderboard.leaderboard([root], tmp_path / "lb3", make_plots=False, grader="judge")
    page = Path(view.view(r.folder, tmp_path / "v.html", grader="em")["path"]).read_text()
    assert "grader em (the run&#x27;s grader: match)" in page or "grader em (the run's grader: match)" in page
    with pytest.raises(ViewError, match="--grader f1"):
        view.view(r.folder, tmp_path / "v2.html", grader="f1")
    assert main(["leaderboard", str(root), "--out", str(tmp_path / "lb4"), "--no-plots", "--grader", "f1"]) == 2


def test_leaderboard_marks_a_contender_ranked_differently_by_f1():
    from sealbench.report.leaderboard import board
    from sealbench.report.results import make_row, rows_to_frame

    common = dict(run_id="r", task="seal_squad_nocontext", protocol="single", model="m", grader="match",
                  eval_set="e", n=10)
    rows = []
    for name, acc, f1 in (("base", 0.1, 0.05), ("passage", 0.5, 0.07), ("teacher-notes", 0.3, 0.09)):
        rows += [make_row(**common, contender=name, metric="accuracy", value=acc, unit="passages"),
                 make_row(**common, contender=name, metric="f1", value=f1, unit="passages"),
                 make_row(**common, contender=name, metric="answer_words", value=20.0, unit="questions")]
    (g,) = board(rows_to_frame(rows), rows_to_frame([]))
    t = g["table"].set_index("contender")
    assert t.loc["passage", "rank"] == "1" and t.loc["passage", "F1 rank"] == "2 ≠"
    assert t.loc["teacher-notes", "F1 rank"] == "1 ≠" and t.loc["base", "F1 rank"] == "3"
    assert t.loc["base", "answer words"] == "20.0"
    assert "ranked differently by SQuAD F1 than by match: passage, teacher-notes" in g["rank_note"]


def test_leaderboard_shows_each_graders_own_difference_vs_base():
    """A run graded by two graders has two accuracy_diff rows per contender: each group shows its own."""
    from sealbench.report.leaderboard import board
    from sealbench.report.results import make_row, rows_to_frame

    rows = []
    for grader, diff in (("match", 0.40), ("f1", 0.01)):
        common = dict(run_id="r", task="seal_squad_nocontext", protocol="single", model="m", grader=grader,
                      eval_set="e", n=10)
        rows += [make_row(**common, contender="base", metric="accuracy", value=0.05, unit="passages"),
                 make_row(**common, contender="passage", metric="accuracy", value=0.05 + diff, unit="passages"),
                 make_row(**common, contender="passage", metric="accuracy_diff", vs="base", value=diff,
                          p_value=0.001, unit="passages")]
    groups = {g["key"][3]: g["table"].set_index("contender") for g in board(rows_to_frame(rows), rows_to_frame([]))}
    assert groups["match"].loc["passage", "Δ vs base (p)"] == "+40.0 (p=0.001)"
    assert groups["f1"].loc["passage", "Δ vs base (p)"] == "+1.0 (p=0.001)"


# ----------------------------------------------------------------------------------- migrate
COMMITTED_200 = (Path(__file__).resolve().parent.parent / "benchmarks" / "results" / "gpu_runs_2026-11-30"
                 / "seal-squad-nocontext-embedded-4d90533cd3")


def test_migration_of_the_committed_200_passage_run_keeps_every_number(tmp_path, real_data_dir):
    """Undo the committed migration on a copy (old keys back, no verdicts, no answer_words rows),
    redo it: the same rows and table as the migration wrote them (before `sealbench grade`), every
    number of the old table kept, and the re-keyed rows are the keys today's planner gives (reused
    by a run with any grader)."""
    import shutil

    from sealbench.report.migrate import upgrade_folder

    from sealbench.report.results import run_markdown

    if not COMMITTED_200.exists():
        pytest.skip("no committed 200-passage run")
    folder = tmp_path / COMMITTED_200.name
    shutil.copytree(COMMITTED_200, folder)
    # The run as migrated, before `sealbench grade` replaced the old match's verdicts (kept as
    # match@legacy) and added em's and f1's (issue 20, part 4).
    migrated = read_rows(folder / RESULTS)
    for r in migrated:
        for q in r.get("questions") or []:
            q["verdicts"] = {"match": q["verdicts"]["match@legacy"]}
            q["correct"], q["reason"] = q["verdicts"]["match"]["correct"], q["verdicts"]["match"]["reason"]
        if r.get("questions"):
            r["accuracy"] = sum(float(q["correct"]) for q in r["questions"]) / len(r["questions"])
    migrated_table = [{**t, "grader": "match"} for t in read_rows(folder / "summary.jsonl")
                      if t["grader"] == "match@legacy"]
    manifest = json.loads((folder / "manifest.json").read_text())
    assert manifest["unit_keys"]["scheme"] == "grader-free" and manifest["unit_keys"]["rows_rekeyed"] == 600
    rows = json.loads(json.dumps(migrated))
    for r in rows:
        if "key_with_grader" in r:
            r["key"] = r.pop("key_with_grader")
        r.pop("grader", None)
        for q in r.get("questions") or []:
            q.pop("verdicts", None)
    (folder / RESULTS).write_text("".join(json.dumps(r) + "\n" for r in rows))
    table = [t for t in migrated_table if t["metric"] != "answer_words"]
    (folder / "summary.jsonl").write_text("".join(json.dumps(t) + "\n" for t in table))
    del manifest["unit_keys"]
    (folder / "manifest.json").write_text(json.dumps(manifest))
    status, detail = upgrade_folder(folder, real_data_dir)
    assert status == "upgraded" and detail.startswith("600 rows re-keyed"), detail
    assert read_rows(folder / RESULTS) == migrated
    again = read_rows(folder / "summary.jsonl")
    assert again == migrated_table and {t["metric"] for t in again[len(table):]} == {"answer_words"}
    assert (folder / "summary.md").read_text() == run_markdown(migrated_table)
    assert upgrade_folder(folder, real_data_dir)[0] == "already upgraded"


def test_a_cpt_run_is_graded_again_at_every_n(tmp_path, data, tiny, monkeypatch):
    r = run(cfg(tmp_path, data, protocol="cpt", cpt_n=[1, 2]), loaded=tiny, **QUIET)
    no_model(monkeypatch)
    assert grade_run(r.folder, "f1", say=lambda m: None) == "graded"
    table = read_rows(r.folder / "summary.jsonl")
    old = {(t["contender"], t["metric"], t["at"], t["vs"]): t["value"] for t in r.rows}
    assert {(t["contender"], t["metric"], t["at"], t["vs"]): t["value"] for t in table if t["grader"] == "match"} == old
    f1 = {(t["contender"], t["metric"], t["at"]) for t in table if t["grader"] == "f1"}
    assert {("passage", "accuracy", "N=1"), ("passage", "accuracy", "N=2"), ("base", "accuracy", "N=2"),
            ("passage", "answer_words", "N=2")} <= f1
