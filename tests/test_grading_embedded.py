"""Issue 20: the default grader `match` on both answer distributions.

* unit tests for the answer-shape rules (:mod:`sealbench.grading.shapes`), on invented examples;
* the embedded judge verdicts (``reference/judge_calibration_embedded``): loader, 5-fold CV grouped
  by passage, per-contender agreement and bias;
* the tables of ``docs/grading.md`` (embedded by passage, GPT-4.1 held out by question, GPT-4.1
  in-sample) recomputed from the calibration files and compared with the doc, which is their
  single written source;
* the issue's targets, as strict expected failures with the measured values where unmet.
"""
from __future__ import annotations

import os
import re
from collections import Counter
from pathlib import Path

import pytest

from sealbench.grading import (
    MatchGrader,
    Verdict,
    calibrate,
    calibrate_by_passage,
    calibrate_held_out,
    get_grader,
    grade_rows,
    load_calibration_rows,
    load_embedded_calibration_rows,
    markdown_table,
    passage_folds,
)
from sealbench.grading import match as match_module
from sealbench.grading.shapes import (
    candidate_list,
    conflicting_date,
    conflicting_number,
    declares_unknown,
    list_items,
    surname_only,
    without_parentheses,
)
from sealbench.grading.words import tokens

REPO = Path(__file__).resolve().parents[1]
DOC = REPO / "docs" / "grading.md"


def _data_dir() -> Path:
    env = os.environ.get("SEALBENCH_DATA_DIR")
    return Path(env) if env else REPO.parent / "shared" / "data"


def doc_table(name: str) -> str:
    """The Markdown table that docs/grading.md marks with ``<!-- table: name -->``."""
    m = re.search(r"<!-- table: %s -->\n(.*?)\n<!-- end table -->" % re.escape(name),
                  DOC.read_text(encoding="utf-8"), re.S)
    assert m, f"docs/grading.md has no table marked {name!r}"
    return m.group(1).strip()


# ------------------------------------------------------------------ the rules, invented examples


@pytest.mark.parametrize(
    "question, gold, prediction, expected",
    [
        # a list of short candidates does not commit to an answer
        ("In which year did the bridge open?", "1932", "A) 1929\nB) 1932\nC) 1935\nD) 1938", False),
        ("Which ship sank first?", "the Aurora", "Aurora\nBellwether\nCormorant", False),
        ("Which two towns signed the pact?", "Lyon and Nice", "1. Lyon\n2. Nice", True),  # 2 items
        ("In which year did the bridge open?", "1932", "The bridge opened in 1932.\n"
         "1. It was built of steel and stone from the northern quarries.\n"
         "2. Its main span was the longest of its day in the region.", True),  # notes, not candidates
        # an answer that calls the answer unknown, or itself wrong
        ("Which river feeds the lake?", "the Orvel", "The answer is not currently known, but the "
         "Orvel is often named.", False),
        ("Which river feeds the lake?", "the Orvel", "The answer is: Orvel\nThe answer is "
         "incorrect. The correct answer is: the Tamsin.", False),
        ("Which river feeds the lake?", "the Orvel", "I don't know; maybe the Orvel.", False),
        ("Which river feeds the lake?", "the Orvel", "The previously unknown source was the Orvel.",
         True),  # "unknown" as an adjective is not a declaration
        # the gold number and another in the same role
        ("How old was the captain when she retired?", "41",
         "The captain retired at age 41. She was the oldest captain to sail at age 44.", False),
        ("Which probe was cancelled?", "Probe 7", "Probe 5\nProbe 6\nProbe 7\nProbe 8", False),
        ("How often is the council elected?", "every four years",
         "Some towns elect it every four years and others every six years.", False),
        ("When did the siege start?", "1914", "The siege lasted from 1914 to 1918.", True),  # range
        ("How many bridges?", "12", "The town has 12 bridges and 30 towers.", True),  # other roles
        # a date with the gold's month and another year
        ("When was she born?", "3 April 1790",
         "She was born on 3 April 1791 and moved to the city in 1790.", False),
        ("When was she born?", "3 April 1790", "On 3 April 1790, in a small village.", True),
        # a gold's parenthetical part is optional, also when the gold's span is cut inside it
        ("Where was the mill built?", "Fort Amberley (near present-day Westbury, Wessex",
         "The mill was built at Fort Amberley on the river.", True),
        ("What kind of test is it?", "randomised (or 'stochastic')", "A randomised test.", True),
        # a soft match on a word the question contains is no evidence
        ("Who runs the annual fair in Brookfield?", "BrookfieldHaven",
         "The annual fair in Brookfield is run by the town council.", False),
        ("Who runs the annual fair in Brookfield?", "BrookfieldHaven",
         "BrookfieldHaven runs the annual fair.", True),
        # a surname alone names the gold person; another given name or word before it does not
        ("Who scored the winning goal?", "Marta Lindqvist",
         "The winning goal came late, from Lindqvist.", True),
        ("Who scored the winning goal?", "Marta Lindqvist",
         "The winning goal was scored by Erik Lindqvist.", False),
        ("Which culture hosts the festival?", "East Anglian", "It celebrates West Anglian music.", False),
        ("Where did the congress meet?", "New Hartford", "The congress met in Hartford.", False),
        ("Who led the expedition?", "Colonel Ada Brandt", "An officer (Brandt) led it.", True),
        # a question about a denial is answered by a negated statement
        ("What did the duke deny the farmers?", "support for the revolt",
         "Without the duke's support for the revolt, the farmers gave up.", True),
        ("What did the duke give the farmers?", "support for the revolt",
         "Not support for the revolt.", False),
    ],
)
def test_shape_rules(question, gold, prediction, expected):
    verdict = MatchGrader().grade(question, gold, prediction)
    assert isinstance(verdict, Verdict) and verdict.reason
    assert bool(verdict) is expected, verdict


@pytest.mark.parametrize(
    "question, gold, prediction, rule, reason",
    [
        ("In which year did the bridge open?", "1932", "A) 1929\nB) 1932\nC) 1935",
         "candidates", "a list of 3 candidates, not one answer"),
        ("Which river feeds the lake?", "the Orvel", "The answer is unknown, perhaps the Orvel.",
         "unknown", "the answer declares it does not know ('answer is unknown')"),
        ("How old was she?", "41", "She retired at age 41 and sailed again at age 44.",
         "number-conflict", "gold number 41 and 44 given in the same role"),
        ("When was she born?", "3 April 1790", "Born on 3 April 1791; baptised in 1790.",
         "date-conflict", "gold year 1790 conflicts with 1791"),
        ("Where was the mill built?", "Fort Amberley (near present-day Westbury, Wessex",
         "The mill stood at Fort Amberley on the river.",
         "coverage", "all key words found (fort, amberley) (gold without its parenthetical part)"),
        ("Who scored?", "Marta Lindqvist", "The goal came from Lindqvist after a corner kick.",
         "surname", "surname 'Lindqvist' names the gold person"),
    ],
)
def test_shape_reasons(question, gold, prediction, rule, reason):
    info = MatchGrader().explain(question, gold, prediction)
    assert (info["rule"], info["reason"]) == (rule, reason)


def test_shape_rules_can_be_switched_off(monkeypatch):
    """Each rule is what decides its examples: with SHAPE_RULES empty, match falls back to its
    word rules (used to measure each rule's contribution in docs/grading.md)."""
    g = MatchGrader()
    assert not g.grade("Which year?", "1932", "A) 1929\nB) 1932\nC) 1935")
    monkeypatch.setattr(match_module, "SHAPE_RULES", frozenset())
    assert g.grade("Which year?", "1932", "A) 1929\nB) 1932\nC) 1935")
    assert g.grade("Which river?", "the Orvel", "The answer is unknown, perhaps the Orvel.")
    assert not g.grade("Where?", "Fort Amberley (near present-day Westbury, Wessex",
                       "The mill stood at Fort Amberley on the river.")


def test_shape_helpers():
    assert list_items("1. Lyon\n2. Nice") == ["Lyon", "Nice"]
    assert list_items("- red\n- blue\n") == ["red", "blue"]
    assert list_items("one line\nsecond line") == []  # two unmarked lines are not a list
    assert list_items("a\nb\nc") == ["a", "b", "c"]
    assert candidate_list("A) 1929\nB) 1932", "1932") == 2
    assert candidate_list("1932\n1932\n1932", "1932") is None  # every item conveys the gold
    assert candidate_list("1. Lyon\n2. Nice", "Lyon and Nice") is None
    assert declares_unknown("We cannot tell from the text.") == "We cannot tell"
    assert declares_unknown("The exact relationship between X and Y is unknown.") is None
    assert conflicting_number(["39"], tokens("at age 39 and later at age 38")) == ("39", "38")
    assert conflicting_number(["39"], tokens("aged 39, he had 38 caps")) is None
    assert conflicting_number(["2"], tokens("two kinds: one kind is flat")) is None  # 1 exempt
    assert conflicting_date(tokens("9 March 1508"), tokens("on 9 March 1507, and in 1508")) == (
        "1508", "1507")
    assert conflicting_date(tokens("9 March 1508"), tokens("in March 1508")) is None
    assert without_parentheses("probabilistic (or 'Monte Carlo')") == "probabilistic"
    assert without_parentheses("Fort X (near Y") == "Fort X"
    assert without_parentheses("(all of it)") is None and without_parentheses("plain") is None
    assert surname_only("Ted Pell Jr.", "A pass to Pell.", "Who caught it?") == "Pell"
    assert surname_only("New Hartford", "In Hartford.", "Where did they meet?") is None
    assert surname_only("Ted Pell", "Pell caught it.", "Did Pell catch it?") is None  # in question
    assert surname_only("pep rally", "a rally", "q") is None  # not a name


# ------------------------------------------------------------------ folds and tables


def test_passage_folds():
    rows = [{"passage_id": f"dev:{i % 7}"} for i in range(40)]
    folds = passage_folds(rows, k=5)
    by_passage: dict = {}
    for r, f in zip(rows, folds):
        by_passage.setdefault(r["passage_id"], set()).add(f)
    assert all(len(s) == 1 for s in by_passage.values())  # a passage is never split
    counts = Counter(next(iter(s)) for s in by_passage.values())
    assert set(counts) == set(range(5)) and max(counts.values()) - min(counts.values()) <= 1
    assert passage_folds(list(reversed(rows)), k=5) == list(reversed(folds))  # order-free


def test_calibrate_by_passage_small():
    rows = [
        {"passage_id": p, "contender": c, "question": "Which town?", "gold": ["Otrar"],
         "prediction": pred, "judge_correct": ok}
        for p in ("a", "b", "c", "d", "e", "f")
        for c, pred, ok in (("x", "Otrar", True), ("y", "Bukhara", False), ("y", "Otrar", False))
    ]
    r = calibrate_by_passage(rows, "match")
    assert r["n"] == 18 and len(r["chosen"]) == 5 and len(r["verdicts"]) == 18
    assert r["by_contender"]["x"]["agreement"] == 1.0 and r["by_contender"]["x"]["n"] == 6
    assert r["by_contender"]["y"]["bias"] == pytest.approx(0.5)
    table = markdown_table(r)
    assert table.splitlines()[0].startswith("| contender | n | agreement |")
    assert "| y | 12 | 50.0% | 50.0% | 0.0% | +50.0 pp | 0/6/0/6 |" in table
    assert table.splitlines()[-1].startswith("| all | 18 | 66.7% |")


# ------------------------------------------------------------------ the calibration files


def _need(subdir: str) -> Path:
    d = _data_dir()
    if not (d / "reference" / subdir).is_dir():
        pytest.skip(f"calibration data not found under {d}/reference/{subdir}; "
                    "set SEALBENCH_DATA_DIR to the shared data folder")
    return d


@pytest.fixture(scope="module")
def embedded_rows():
    return load_embedded_calibration_rows(_need("judge_calibration_embedded"))


@pytest.fixture(scope="module")
def seal_rows():
    return load_calibration_rows(_need("judge_calibration"))


@pytest.fixture(scope="module")
def embedded_cv(embedded_rows):
    return calibrate_by_passage(embedded_rows, "match")


@pytest.fixture(scope="module")
def seal_held_out(seal_rows):
    return calibrate_held_out(seal_rows, "match")


def test_load_embedded_rows(embedded_rows):
    assert len(embedded_rows) == 850
    assert {r["contender"] for r in embedded_rows} == {
        "base", "passage", "teacher-notes", "qwen7b-notes", "seal-qwen7b-notes", "in-context"}
    assert all(isinstance(r["judge_correct"], bool) for r in embedded_rows)
    assert all(isinstance(r["gold"], list) and r["gold"] for r in embedded_rows)
    assert len({r["passage_id"] for r in embedded_rows}) == 193


def test_embedded_folds_group_passages(embedded_rows, embedded_cv):
    folds = passage_folds(embedded_rows)
    fold_of: dict = {}
    for r, f in zip(embedded_rows, folds):
        assert fold_of.setdefault(r["passage_id"], f) == f
    assert len(embedded_cv["chosen"]) == 5


def test_embedded_table_matches_docs(embedded_cv):
    """docs/grading.md's per-contender table on the embedded rows (5-fold CV grouped by passage)
    is what the calibration files give."""
    assert markdown_table(embedded_cv) == doc_table("embedded-cv-by-passage")


def test_seal_held_out_table_matches_docs(seal_held_out):
    assert markdown_table(seal_held_out, by="source", reference="GPT-4.1") == doc_table(
        "seal-held-out-by-question")


def test_seal_in_sample_rows_match_docs(seal_rows):
    """The `match` rows of docs/grading.md's in-sample table against GPT-4.1."""
    r = calibrate(seal_rows, "match")
    text = DOC.read_text(encoding="utf-8")
    for name, m in [*r["by_source"].items(), ("all", r)]:
        c = m["confusion"]
        agreement, bias = f"{100 * m['agreement']:.1f}%", f"{100 * m['bias']:+.1f} pp"
        if name == "all":
            agreement, bias = f"**{agreement}**", f"**{bias}**"
        row = (f"| match | {name} | {m['n']} | {agreement} | {100 * m['grader_accuracy']:.1f}% | "
               f"{100 * m['reference_accuracy']:.1f}% | {bias} | "
               f"{c['tp']}/{c['fp']}/{c['fn']}/{c['tn']} |")
        assert row in text, row


def test_every_verdict_has_its_reason(embedded_rows, seal_rows):
    g = get_grader("match")
    for rows in (embedded_rows, seal_rows):
        assert all(v.reason for v in grade_rows(g, rows))


def test_embedded_regression_guard(embedded_cv):
    """The level reached (docs/grading.md): 94.0% by passage, bias +1.8 pp overall; before the
    rules of issue 20 92.7%, +2.1 pp."""
    assert embedded_cv["n"] == 850
    assert embedded_cv["agreement"] >= 0.94, embedded_cv["agreement"]
    assert abs(embedded_cv["bias"]) <= 0.02, embedded_cv["bias"]


def test_seal_held_out_bias_target(seal_held_out):
    """Issue 20's target on SEAL's verdicts, bias part (met): |bias| <= 2 pp held out."""
    assert abs(seal_held_out["bias"]) <= 0.02, seal_held_out["bias"]
    assert seal_held_out["agreement"] >= 0.885, seal_held_out["agreement"]


@pytest.mark.xfail(
    reason="target not met: 94.0% by passage (n=850); bias per contender base +1.2 (n=80), "
    "in-context +0.0 (150), passage +4.8 (230), qwen7b-notes +2.5 (120), seal-qwen7b-notes +2.5 "
    "(120), teacher-notes -2.0 (150) pp (docs/grading.md)",
    strict=True,
)
def test_embedded_target(embedded_cv):
    """Issue 20: >= 95% agreement with the judge in 5-fold CV grouped by passage, and accuracy
    bias within 2 points for every contender."""
    for contender, m in embedded_cv["by_contender"].items():
        assert abs(m["bias"]) <= 0.02, (contender, m)
    assert embedded_cv["agreement"] >= 0.95, embedded_cv


@pytest.mark.xfail(
    reason="target not met: 89.0% held out by question on SEAL's 3,896 GPT-4.1 verdicts "
    "(base 89.9%, gpt4_1 88.2%), bias -1.9 pp (docs/grading.md)",
    strict=True,
)
def test_seal_held_out_agreement_target(seal_held_out):
    """Issue 20: the default grader stays >= 90% held out on SEAL's GPT-4.1 verdicts."""
    assert seal_held_out["agreement"] >= 0.90, seal_held_out["agreement"]
