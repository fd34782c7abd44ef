"""`sealbench view` (one run folder as a page) and `sealbench leaderboard --check` (CI staleness).

Every generated page is parsed with html.parser and checked against the run's rows: synthetic
folders with every edge (grader disagreements, degenerate outputs, a failed unit, RL rounds) and
real folders written by the runner with the tiny random model (knowledge single and continual,
ARC), plus the committed benchmark folders (migrated copies)."""
from __future__ import annotations

import functools
import json
import shutil
from html.parser import HTMLParser
from pathlib import Path

import pytest

from conftest import MADE_UP, MADE_UP_2, write_data_dir
from sealbench.config import RunConfig
from sealbench.families.arc.data import load_tasks
from sealbench.families.squad.data import seal_eval_passages
from sealbench.report import leaderboard, migrate, view, view_items
from sealbench.report.results import csv_text, find_run_dirs, jsonl_text, make_row, run_markdown
from sealbench.runner import run

REPO = Path(__file__).resolve().parent.parent
COMMITTED = REPO / "benchmarks" / "results"
QUIET = dict(progress=False, say=lambda m: None)
SMALL_TTT = {"cap": 4, "predict_transforms": ("identity",), "leave_one_out_prompts": False, "max_new_tokens": 40}


class Page(HTMLParser):
    """Parses a page: balanced tags, external references, the text, answer rows (attrs + cell
    texts), selects with their options, grids (shape attr, cell classes per row)."""

    def __init__(self, text: str):
        super().__init__()
        self.stack, self.text, self.external, self.rows, self.selects, self.grids = [], [], [], [], {}, []
        self.inputs, self._select, self._grid, self._row, self._cell = {}, None, None, None, None
        self.feed(text)
        self.close()
        assert self.stack == [], self.stack

    def handle_starttag(self, tag, attrs):
        a = dict(attrs)
        if tag not in ("meta", "input", "col", "br"):
            self.stack.append(tag)
        if tag in ("link", "img", "iframe") or str(a.get("src", "")).startswith(("http", "//")):
            self.external.append(tag)
        if tag == "script":
            assert "src" not in a
        if tag == "select":
            self._select = self.selects.setdefault(a["id"], [])
        if tag == "option" and self._select is not None:
            self._select.append(a["value"])
        if tag == "input":
            self.inputs[a["id"]] = a
        if tag == "table" and "grid" in a.get("class", ""):
            self._grid = {"shape": a["data-shape"], "rows": []}
            self.grids.append(self._grid)
        if tag == "tr" and self._grid is not None:
            self._grid["rows"].append([])
        if tag == "td" and self._grid is not None:
            self._grid["rows"][-1].append(int(a["class"][1:]))
        if tag == "tr" and "ans" in a.get("class", "").split():
            self._row = {"attrs": a, "cells": []}
            self.rows.append(self._row)

    def handle_endtag(self, tag):
        assert self.stack and self.stack[-1] == tag, f"unbalanced </{tag}> (open: {self.stack[-3:]})"
        self.stack.pop()
        if tag == "select":
            self._select = None
        if tag == "table" and self._grid is not None:
            self._grid = None
        if tag == "tr" and self._row is not None and self._grid is None and "tr" not in self.stack:
            self._row = None

    def handle_data(self, data):
        self.text.append(data)
        if self._row is not None:
            self._row["cells"].append(data)

    @functools.cached_property
    def all_text(self) -> str:  # cached: tests look up thousands of answers in a page of megabytes
        return " ".join(" ".join(self.text).split())


def norm(text: str) -> str:
    return " ".join(str(text).split())


def built(folder: Path, **kw) -> tuple[Page, dict, str]:
    out = folder.parent / f"{folder.name}.html"
    counts = view.view(folder, out, **kw)
    text = out.read_text(encoding="utf-8")
    page = Page(text)
    assert not page.external and "<script>" in text and "<style>" in text
    return page, counts, text


def results(folder: Path) -> list[dict]:
    return [json.loads(line) for line in (folder / "results.jsonl").read_text().splitlines() if line.strip()]


def check_filters(page: Page, contenders: set[str], verdicts: tuple[str, ...]) -> None:
    assert set(page.selects["f-c"]) == {""} | contenders
    assert tuple(page.selects["f-v"]) == ("",) + verdicts
    assert page.inputs["f-g"]["type"] == "checkbox"


def counts_of(page: Page) -> dict[tuple[str, str], int]:
    """(contender, verdict) -> answer rows on the page."""
    out: dict = {}
    for r in page.rows:
        key = (r["attrs"]["data-c"], r["attrs"]["data-v"])
        out[key] = out.get(key, 0) + 1
    return out


# ----------------------------------------------------------------------------------- degenerate + graders
def test_flags_find_empty_repeated_and_runaway_outputs():
    assert view_items.flags("") == ["empty"] and view_items.flags("   \n") == ["empty"]
    assert view_items.flags("The answer is:\nThe answer is:\nThe") == ["line repeated 2×"]
    assert view_items.flags("it was a series of laws and it was a series of laws so it was a series of laws")[0] \
        .startswith("repeated 4-gram 3×")
    assert view_items.flags("Elodie Marwick", raw="Elodie Marwick\n\nQ: " + "and more " * 20)[0].startswith("runaway")
    assert view_items.flags("Elodie Marwick", raw="Elodie Marwick\n") == []


def test_disagreements_name_who_says_what():
    q = {"correct": True, "em": 0.0}
    assert [w for _, w in view_items.disagreements(q, "match")] == ["match says right, EM says wrong"]
    q = {"correct": False, "em": 1.0, "verdicts": {"judge": True, "match": False}}
    assert [w for _, w in view_items.disagreements(q, "match")] == ["match says wrong, EM says right",
                                                            "match says wrong, judge says right"]
    assert view_items.disagreements({"correct": True, "em": 1.0}, "match") == []


# ----------------------------------------------------------------------------------- synthetic knowledge run
def q(question, golds, prediction, correct, em, raw=None, reason="r", **kw):
    return {"question": question, "golds": golds, "raw": raw if raw is not None else prediction,
            "prediction": prediction, "correct": correct, "reason": reason, "em": em, "f1": em, **kw}


@pytest.fixture
def synthetic_run(tmp_path) -> Path:
    """A finished single run on two made-up passages: every edge a researcher looks for."""
    data = write_data_dir(tmp_path / "data", [MADE_UP, MADE_UP_2])
    p1, p2 = sorted(seal_eval_passages(2, data), key=lambda p: -len(p.questions))  # p1: 4 questions
    folder = tmp_path / "reports" / "synthetic-run"
    folder.mkdir(parents=True)
    train = {"steps": 7, "tokens": 1234, "first_loss": 3.5, "last_loss": 1.25, "seconds": 2.0}
    qs1 = [q(x.question, x.answers, x.answers[0], True, 1.0) for x in p1.questions]
    rows = [
        {"key": "a", "contender": "passage", "passage_id": p1.id, "status": "ok", "train": train, "self_edits": [],
         "questions": [q(p1.questions[0].question, p1.questions[0].answers, "It was " + p1.questions[0].answers[0]
                         + " of course", True, 0.0, reason="key words found"),
                       q(p1.questions[1].question, p1.questions[1].answers, "", False, 0.0, reason="empty prediction"),
                       q(p1.questions[2].question, p1.questions[2].answers, "Well.\nWell.\nWell.", False, 0.0),
                       q(p1.questions[3].question, p1.questions[3].answers, "1", False, 0.0,
                         raw="1\n\nQuestion: " + "what is it? " * 10, verdicts={"judge": True})]},
        {"key": "b", "contender": "self-notes", "passage_id": p1.id, "status": "ok", "train": train,
         "self_edits": ["Zorbian glass is blue.\nIt was invented in 1873."], "questions": qs1},
        {"key": "c", "contender": "self-notes", "passage_id": p2.id, "status": "failed", "error": "NaN loss at step 3",
         "self_edits": ["notes"]},
        {"key": "d", "contender": "base", "passage_id": p2.id, "status": "ok", "train": None, "self_edits": [],
         "questions": [q(x.question, x.answers, "no idea", False, 1.0, reason="match: no") for x in p2.questions]},
    ]
    (folder / "results.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    (folder / "config.json").write_text(json.dumps({"task": "seal_squad_nocontext", "protocol": "single",
                                                    "contenders": ["base", "passage", "self-notes"], "n_passages": 2,
                                                    "grader": "match", "data_dir": str(data)}))
    table = [make_row(run_id="synthetic-run", task="seal_squad_nocontext", protocol="single", model="m",
                      contender=c, grader="match", eval_set="e", metric="accuracy", value=v, ci_low=0.0, ci_high=1.0,
                      n=2, unit="passages") for c, v in (("base", 0.0), ("passage", 0.25), ("self-notes", 1.0))]
    for name, text in (("summary.jsonl", jsonl_text(table)), ("summary.csv", csv_text(table)),
                       ("summary.md", run_markdown(table)), ("COMPLETE", "")):
        (folder / name).write_text(text)
    return folder


def test_synthetic_knowledge_page_shows_every_answer_and_flags(synthetic_run):
    page, counts, text = built(synthetic_run)
    words, rows = page.all_text, results(synthetic_run)
    for r in rows:
        for x in r.get("questions", []):
            assert norm(x["question"]) in words and all(norm(g) in words for g in x["golds"])
            assert norm(x["prediction"]) in words and norm(x["reason"]) in words
    for p in (MADE_UP, MADE_UP_2):  # the passages' titles and contexts, loaded as the run loaded them
        assert p["title"] in words and norm(p["context"]) in words
    assert "Zorbian glass is blue. It was invented in 1873." in words
    assert "training: 7 steps · 1,234 tokens · loss 3.500 → 1.250 · 2.0 s" in words
    assert "NaN loss at step 3" in words
    # verdict counts: page rows == the rows' verdicts == the counts table
    expected = {("passage", "right"): 1, ("passage", "wrong"): 3, ("self-notes", "right"): 4,
                ("self-notes", "failed"): 1, ("base", "wrong"): 2}
    assert counts_of(page) == expected
    assert (counts["answers"], counts["right"], counts["wrong"], counts["failed"]) == (11, 5, 5, 1)
    assert "answers by verdict answers right wrong failed degenerate disagree" in words
    assert "base 2 0 2 0 0 2" in words and "all 11 5 5 1 3 4" in words
    check_filters(page, {"base", "passage", "self-notes"}, ("right", "wrong", "failed"))
    assert page.selects["f-d"][:2] == ["", "*"]
    assert {"match_right_em_wrong", "match_wrong_em_right", "match_wrong_judge_right"} <= set(page.selects["f-d"])
    assert "match says right, EM says wrong" in words and "match says wrong, judge says right" in words
    # degenerate outputs are flagged on their rows
    by_pred = {norm(" ".join(r["cells"])): r for r in page.rows}
    flagged = {k: r["attrs"]["data-g"] for k, r in by_pred.items()}
    assert sum(v == "1" for v in flagged.values()) == counts["degenerate"] == 3
    for marker in ("empty", "line repeated 3×", "runaway: raw"):
        row = next(r for r in page.rows if marker in " ".join(r["cells"]))
        assert row["attrs"]["data-g"] == "1"
    assert "raw (" in words  # the cut-off raw output is shown under the prediction


def test_view_errors_are_one_line_with_exit_2(tmp_path, capsys, synthetic_run):
    (tmp_path / "unfinished").mkdir()
    (tmp_path / "unfinished" / "config.json").write_text("{}")
    (tmp_path / "old").mkdir()
    (tmp_path / "old" / "summary.json").write_text("{}")
    (tmp_path / "empty").mkdir()
    for name, words in (("nowhere", "no run folder"), ("unfinished", "unfinished"), ("old", "sealbench migrate"),
                        ("empty", "not a run folder")):
        assert view.main([str(tmp_path / name)]) == 2
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and err[0].startswith("sealbench: error: ") and words in err[0], err
    (synthetic_run / "results.jsonl").write_text('{"key": "a"}\nnot json\n{"key": "b"}\n')
    assert view.main([str(synthetic_run)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "results.jsonl:2" in err[0]


def test_view_cli_writes_the_default_page(synthetic_run, capsys):
    assert view.main([str(synthetic_run)]) == 0
    assert (synthetic_run / "view.html").exists() and "11 answers" in capsys.readouterr().err


# ----------------------------------------------------------------------------------- real tiny runs
@pytest.fixture(scope="module")
def tiny_runs(tmp_path_factory, tiny) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("view-runs")
    data = write_data_dir(root / "data", [MADE_UP, MADE_UP_2])
    common = dict(n_passages=2, epochs=1, max_answer_tokens=6, seed=0, data_dir=str(data),
                  reports_dir=str(root / "reports"), notes_max_tokens=12)
    single = run(RunConfig(contenders=["base", "passage", "self-notes", "in-context"], **common), loaded=tiny, **QUIET)
    cont = run(RunConfig(protocol="continual", contenders=["passage"], steps=2, sequences=1, **common),
               loaded=tiny, **QUIET)
    arc = run(RunConfig(task="seal_arc_mini", contenders=["icl", "oracle"], n_tasks=1, mini_rules=["color_map"],
                        mini_size=(3, 3), arc_budget="cpu", device="cpu", ttt=SMALL_TTT,
                        reports_dir=str(root / "reports")), loaded=tiny, **QUIET)
    return {"single": single.folder, "continual": cont.folder, "arc": arc.folder}


def test_real_single_run_page_matches_its_rows(tiny_runs):
    folder = tiny_runs["single"]
    page, counts, _ = built(folder)
    words, rows = page.all_text, results(folder)
    n = right = 0
    for r in rows:
        for x in r["questions"]:
            n, right = n + 1, right + bool(x["correct"])
            assert norm(x["question"]) in words and norm(x["golds"][0]) in words and norm(x["prediction"]) in words
        for e in r["self_edits"]:
            assert norm(e) in words
        if r["train"]:
            assert f"training: {r['train']['steps']} steps · {r['train']['tokens']:,} tokens" in words
    assert counts["answers"] == len(page.rows) == n and counts["right"] == right
    assert sum(1 for r in page.rows if r["attrs"]["data-v"] == "right") == right
    check_filters(page, {"base", "passage", "self-notes", "in-context"}, ("right", "wrong", "failed"))
    assert MADE_UP["context"][:60] in words


def test_real_continual_run_page_shows_matrix_and_answers_by_step(tiny_runs):
    folder = tiny_runs["continual"]
    page, counts, _ = built(folder)
    (row,) = results(folder)
    words = page.all_text
    answers = [a for k in row["answers"] for a in row["answers"][k]]
    assert counts["answers"] == len(answers) == len(page.rows)
    assert sum(bool(a[2]) for a in answers) == counts["right"]
    for a in answers:
        assert norm(a[1]) in words
    assert "before any edit" in words and "after edit 1 (trained on" in words and "after edit 2" in words
    assert f"item 0 ({row['passage_ids'][0]})" in words and "after 2" in words
    for p in (MADE_UP, MADE_UP_2):
        assert all(norm(x["question"]) in words and x["answer"] in words for x in p["questions"])


def test_real_arc_run_page_renders_grids_cell_by_cell(tiny_runs):
    folder = tiny_runs["arc"]
    page, counts, _ = built(folder)
    rows = results(folder)
    (task,) = load_tasks("mini", n_tasks=1, seed=0, mini_rules=["color_map"], mini_size=(3, 3))
    for g in page.grids:
        h, w = map(int, g["shape"].split("x"))
        assert len(g["rows"]) == h and all(len(r) == w for r in g["rows"])
        assert all(0 <= v <= 9 for r in g["rows"] for v in r)
    shown = [g["rows"] for g in page.grids]
    for x, y in task.train:  # every demonstration, cell by cell in the ARC palette classes
        assert [list(r) for r in x] in shown and [list(r) for r in y] in shown
    assert shown.count([list(r) for r in task.test_outputs[0]]) >= len(rows)  # the gold beside each unit's attempts
    assert counts["answers"] == sum(len(r["test_solved"]) for r in rows) == len(page.rows)
    assert counts["right"] == sum(sum(r["test_solved"]) for r in rows)
    check_filters(page, {r["contender"] for r in rows}, ("right", "wrong", "failed"))
    assert "f-d" not in page.selects  # one grader: no disagreement filter
    oracle = next(r for r in rows if r["contender"] == "oracle")
    assert norm(oracle["self_edit"]) in page.all_text and f"self-edit {oracle['edit_status']}" in page.all_text


# ----------------------------------------------------------------------------------- RL folder
def test_rl_page_shows_every_sample_with_its_reward_and_the_kept_ones(tmp_path):
    folder = tmp_path / "seal-rl-x"
    (folder / "round_1").mkdir(parents=True)
    (folder / "config.json").write_text(json.dumps({"kind": "seal-rl", "task": "seal_squad_nocontext"}))
    samples = [{"key": f"train:{i}|{j}", "item_id": f"train:{i}", "sample": j, "text": f"note {i}.{j} about glass",
                "reward": 0.25 * j, "rewards": [0.25 * j]} for i in range(2) for j in range(3)]
    samples[0]["text"] = "again\nagain\nagain"
    (folder / "round_1" / "rewards.jsonl").write_text("".join(json.dumps(s) + "\n" for s in samples))
    (folder / "round_1" / "kept.json").write_text(json.dumps([{"key": "train:0|2"}, {"key": "train:1|2"}]))
    (folder / "round_1" / "stats.json").write_text(json.dumps(
        {"reward_all": {"mean": 0.25, "ci_low": 0.1, "ci_high": 0.4, "n": 6},
         "reward_kept": {"mean": float("nan"), "n": 0}, "sft": {"n_pairs": 2, "first_loss": 2.0, "last_loss": 1.5}}))
    rows = [make_row(run_id="seal-rl-x", task="seal_squad_nocontext", protocol="rl", model="m", contender="seal",
                     grader="match", eval_set="t", metric="reward_all", at="round=1", value=0.25, n=6, unit="edits")]
    (folder / "summary.jsonl").write_text(jsonl_text(rows))
    (folder / "COMPLETE").write_text("")
    page, counts, _ = built(folder)
    words = page.all_text
    assert all(norm(s["text"]) in words for s in samples)
    assert counts["answers"] == 6 and counts["kept"] == 2 and counts["not-kept"] == 4 and counts["degenerate"] == 1
    kept = [r for r in page.rows if r["attrs"]["data-v"] == "kept"]
    assert [norm(" ".join(r["cells"])).split(" ")[1] for r in kept] == ["2", "2"] and all("★ kept" in norm(
        " ".join(r["cells"])) for r in kept)
    check_filters(page, {"round 1"}, ("kept", "not-kept"))
    assert "what the RL loop taught the model to write" in words
    assert "reward all 25.0% [10.0, 40.0] (n=6)" in words and "reward kept" not in words.split("SFT")[0]
    assert "SFT on 2 kept: loss 2.000 → 1.500" in words


# ----------------------------------------------------------------------------------- committed folders
def test_every_committed_run_folder_can_be_viewed(tmp_path):
    if not COMMITTED.exists():
        pytest.skip("no committed benchmark results")
    root = tmp_path / "results"
    shutil.copytree(COMMITTED, root, ignore=shutil.ignore_patterns("leaderboard.*"))
    assert migrate.main([str(root)]) == 0
    finished = [f for f in find_run_dirs(root) if (f / "COMPLETE").exists()]
    assert finished
    for folder in finished:
        page, counts, _ = built(folder)
        assert counts["answers"] == len(page.rows) > 0, folder
        if (folder / "results.jsonl").exists() and "protocol" in json.loads((folder / "config.json").read_text()):
            for r in results(folder):
                for x in r.get("questions", []):
                    assert norm(x["prediction"]) in page.all_text


# ----------------------------------------------------------------------------------- leaderboard --check
def test_leaderboard_check_passes_when_fresh_and_names_a_stale_file(tmp_path, capsys):
    from test_report import build

    reports = build(tmp_path / "reports")
    out = tmp_path / "committed"
    assert leaderboard.main([str(reports), "--out", str(out), "--no-plots"]) == 0
    capsys.readouterr()
    argv = [str(reports), "--out", str(out), "--no-plots", "--check"]
    assert leaderboard.main(argv) == 0
    assert "up to date" in capsys.readouterr().err
    before = {p.name: p.read_bytes() for p in out.iterdir()}
    for name in ("leaderboard.md", "leaderboard.html"):
        (out / name).write_text((out / name).read_text().replace("tiny-lm", "tiny-LM", 1))
        assert leaderboard.main(argv) == 1
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and err[0].startswith(f"sealbench: error: {out / name} is stale"), err
        assert f"sealbench leaderboard {reports} --out {out} --no-plots" in err[0]
        (out / name).write_bytes(before[name])
    assert {p.name: p.read_bytes() for p in out.iterdir()} == before  # --check writes nothing
    (out / "leaderboard.html").unlink()
    assert leaderboard.main(argv) == 1
    err = capsys.readouterr().err.strip()
    assert err == f"sealbench: error: {out / 'leaderboard.html'} is missing: run " \
                  f"`sealbench leaderboard {reports} --out {out} --no-plots` and commit it"
    assert leaderboard.main([str(tmp_path / "nothing"), "--check", "--no-plots"]) == 2
