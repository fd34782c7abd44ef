"""Tests for sealbench.grading: SQuAD metrics, verdicts and input types, cutting answers, the match
grader, the registry, calibration against GPT-4.1, the LLM judge."""
from __future__ import annotations

import json
import os
import re
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from sealbench import grading
from sealbench.grading import (
    ANSWER_STOPS,
    DEFAULT_GRADER,
    GRADERS,
    GraderError,
    MatchGrader,
    Verdict,
    agreement_metrics,
    answer_region,
    calibrate,
    calibrate_held_out,
    cut_answer,
    exact_match,
    f1_score,
    get_grader,
    grade_rows,
    load_calibration_rows,
    normalize_answer,
    parse_yes_no,
    question_folds,
)

REPO = Path(__file__).resolve().parents[1]


def _data_dir() -> Path:
    env = os.environ.get("SEALBENCH_DATA_DIR")
    return Path(env) if env else REPO.parent / "shared" / "data"


# ------------------------------------------------------------------ official SQuAD metrics


def test_normalize_answer():
    assert normalize_answer("The  Quick, brown fox!") == "quick brown fox"
    assert normalize_answer("An apple a day") == "apple day"
    assert normalize_answer("  Denver Broncos. ") == "denver broncos"
    assert normalize_answer("") == ""


def test_exact_match():
    assert exact_match("the Denver Broncos", "Denver Broncos") == 1.0
    assert exact_match("Denver", "Denver Broncos") == 0.0
    assert exact_match("Broncos", ["Denver Broncos", "broncos!"]) == 1.0
    assert exact_match("anything", []) == 0.0
    assert isinstance(exact_match("a", "a"), float)


def test_f1_score():
    # pred {cat, sat} vs gold {cat, sat, on, mat}: P=1, R=0.5
    assert f1_score("the cat sat", "cat sat on the mat") == pytest.approx(2 / 3)
    assert f1_score("dog", "cat") == 0.0
    assert f1_score("Denver Broncos", "Denver Broncos") == 1.0
    # max over golds
    assert f1_score("Carolina Panthers", ["Denver Broncos", "the Carolina Panthers"]) == 1.0
    # repeated tokens count once per occurrence (Counter intersection)
    assert f1_score("x y y", "y") == pytest.approx(0.5)  # P = 1/3, R = 1
    assert f1_score("", "x") == 0.0
    assert f1_score("x", []) == 0.0


def test_metrics_accept_numbers():
    assert exact_match("42", 42) == 1.0
    assert exact_match(42, ["41", 42]) == 1.0
    assert exact_match(2.0, "2") == 1.0 and exact_match(0.5, "0.5") == 1.0
    assert f1_score(1979, "1979") == 1.0
    assert exact_match(None, "x") == 0.0  # no answer
    with pytest.raises(GraderError, match="prediction must be a string or a number, not list"):
        exact_match(["42"], "42")


# ------------------------------------------------------------------ verdicts and input types


def test_verdict():
    v = Verdict(True, "exact match")
    assert bool(v) is True and v.correct and v.reason == "exact match"
    assert not Verdict(False, "no")
    assert sum([Verdict(True), Verdict(False), Verdict(True)]) == 2  # sum(verdicts) counts
    with pytest.raises(AttributeError):
        v.correct = False  # frozen


@pytest.mark.parametrize("name", ["match", "em", "f1"])
def test_graders_take_numbers_as_text(name):
    g = get_grader(name)
    assert g.grade("What is the answer?", 42, "42").correct  # was False before numbers were text
    assert g.grade("What is the answer?", "42", 42).correct
    assert g.grade("What is the answer?", [41, 42], 42.0).correct
    assert g.grade_many([{"question": "q", "gold": 1979, "prediction": 1979}])[0].correct
    for bad in (["42"], {"a": 1}, object(), True, None):
        with pytest.raises(GraderError) as err:
            g.grade("q", "42", bad)
        msg = str(err.value)
        assert "\n" not in msg and msg.startswith("prediction must be a string or a number"), msg
    with pytest.raises(GraderError, match="gold answer"):
        g.grade("q", ["42", None], "42")


# ------------------------------------------------------------------ cutting generated answers


def test_cut_answer():
    # the example behind EM 0.0 for every contender: the answer is "1979"
    raw = "1979\n\nQuestion: Topic: Doctor Who\nWhen did ...?\nAnswer:\n1980"
    assert cut_answer(raw, ANSWER_STOPS) == "1979"
    assert exact_match(raw, "1979") == 0.0 and exact_match(cut_answer(raw, ANSWER_STOPS), "1979") == 1.0
    assert cut_answer(" 1979 Question: next one", ANSWER_STOPS) == "1979"
    assert cut_answer("Paris\nQuestion: Topic: x", ANSWER_STOPS) == "Paris"
    assert cut_answer("Paris<|im_end|>\n<|im_start|>user", ANSWER_STOPS) == "Paris"
    assert cut_answer("Paris<end_of_turn>", ANSWER_STOPS) == "Paris"
    assert cut_answer("  Paris is the capital.\nIt is large.  ", ANSWER_STOPS) == (
        "Paris is the capital.\nIt is large.")  # one newline is not a stop
    assert cut_answer("a<|im_end|>b\n\nc", ANSWER_STOPS) == "a"  # the earliest stop wins
    assert cut_answer("abc", ()) == "abc" and cut_answer("ab", ("", "x")) == "ab"
    assert ANSWER_STOPS == ("\n\n", "\nQuestion:", "Question:", "<|im_end|>", "<end_of_turn>")


# ------------------------------------------------------------------ the match grader


@pytest.mark.parametrize(
    "question, gold, prediction, expected",
    [
        # gold inside a sentence
        ("Who was the inventor?", "Thomas Newcomen", "It was invented by Thomas Newcomen.", True),
        ("Who?", "Thomas Newcomen", "James Watt", False),
        # number words vs digits, ordinals
        ("How many times?", "three", "He tore it 3 times.", True),
        ("What century?", "nineteenth", "In the 19th century.", True),
        ("How many?", "50,000", "About 50000 people.", True),
        ("How many?", "14,000", "20,000", False),
        ("How much?", "$170 billion", "$170.4 billion", True),
        ("How much?", "$2 million", "$1.5 million", False),   # not round()'s half-to-even
        ("When?", "1979", "1975", False),
        ("When?", "late 1970s", "It re-opened in 1978.", True),
        # dates: the year carries it, a different month contradicts it
        ("When was he born?", "10 November 1483", "Born on November 10, 1483.", True),
        ("When was he born?", "10 November 1483", "1483", True),
        ("When did he leave?", "June 30, 1951", "He left on September 30, 1951.", False),
        # accents and unicode dashes
        ("Who?", "Ögedei Khan", "His son Ogedei Khan.", True),
        ("Which experiment?", "Miller–Urey experiment", "The Miller-Urey experiment.", True),
        # negation before the gold
        ("Which theory?", "the plague was caused by bad air", "The plague was not caused by bad air.", False),
        # ...unless the question is itself negated
        ("What does it not do?", "eliminate the accusing law", "It does not eliminate the accusing law.", True),
        # runaway continuation after the answer is ignored
        ("Who?", "Graham Gano", "Justin Tucker\n\nQ: Who kicked for the Panthers?\nA: Graham Gano", False),
        # words copied from the question do not count as evidence
        ("What type of rally was held?", "pep rally", "A rally was held downtown.", False),
        # short answers may give the key part of a longer gold
        ("Who did not concur?", "Leonhard Euler", "Euler", True),
        ("What?", "", "anything", False),
        ("What?", "Paris", "", False),
        # numbers carry sign and scale as one value
        ("What is the lowest temperature?", "-40 °C", "40 °C", False),
        ("What is the lowest temperature?", "-40 °C", "It fell to −40 °C.", True),
        ("What is the lowest temperature?", "-40 °C", "minus 40 degrees C", True),
        ("How many people?", "2 million", "2 billion", False),
        ("How many people?", "2 million", "About 2,000,000 people.", True),
        ("How much?", "$170 billion", "$170 million", False),
        ("How many years?", "1939-1945", "From 1939 to 1945.", True),  # a range is not a sign
        # a missing gold word replaced by another of its kind
        ("Which country?", "North Korea", "South Korea", False),
        ("Which country?", "North Korea", "North Korea", True),
        ("Which country?", "North Korea", "northern Korea", True),
        ("What day?", "Monday", "It was on a Tuesday.", False),
        ("What colour?", "blue flag", "a red flag", False),
        ("When did it re-open?", "late 1970s", "In the early 1970s.", False),
        ("When did it re-open?", "late 1970s", "It re-opened in 1978.", True),  # "late" qualifies
        ("Which bank?", "the left bank", "the right bank", False),
        # ...or by another word in its place, in a short answer
        ("What is restrained with a lever?", "plug valve", "The safety valve", False),
        ("Who discovered it?", "Arthur H. Compton", "Arthur Holly Compton", True),  # an initial
        ("What position?", "president and CEO", "President and Chief Executive Officer", True),
        ("What position?", "Chief Executive Officer", "the CEO", True),
        # two items joined by "and": a short answer must name both
        ("Rates of what?", "growth and investment", "growth", False),
        # a month name counts only where it is used as a date
        ("When did the siege end?", "May 1453", "It may have ended in June 1453.", False),
        ("When did the siege end?", "May 1453", "It ended in May 1453.", True),
        ("When did the siege end?", "May 1453", "it ended in may 1453", True),
        ("When?", "March 1917", "Troops marched in 1917.", True),  # the verb is not a month
        # negation needs scope: it must govern the matched gold words
        ("Who was the inventor?", "Thomas Newcomen", "None other than Thomas Newcomen.", True),
        ("Who was the inventor?", "Thomas Newcomen", "It was not Watt, but Thomas Newcomen.", True),
        ("Who was the inventor?", "Thomas Newcomen", "Not Thomas Newcomen.", False),
        ("Who was the inventor?", "Thomas Newcomen", "Nothing but Thomas Newcomen's engine.", True),
        ("Which entities have powers of amendment?", "the European Parliament",
         "The European Parliament has no amendment power.", False),
    ],
)
def test_match_rules(question, gold, prediction, expected):
    verdict = MatchGrader().grade(question, gold, prediction)
    assert isinstance(verdict, Verdict) and verdict.reason
    assert bool(verdict) is expected, verdict


@pytest.mark.parametrize(
    "question, gold, prediction, reason",
    [
        ("When?", "1873", "It was invented in 1873.", "number 1873 matches gold"),
        ("When?", "1979", "1975", "gold number 1979 missing"),
        ("Which country?", "North Korea", "South Korea", "gold word 'north' replaced by 'south'"),
        ("Who?", "Thomas Newcomen", "thomas newcomen", "exact match"),
        ("Who?", "Thomas Newcomen", "It was invented by Thomas Newcomen.",
         "all key words found (thomas, newcomen)"),
        ("When did the siege end?", "May 1453", "It may have ended in June 1453.",
         "month june differs from gold may"),
        ("Which theory?", "the plague was caused by bad air", "The plague was not caused by bad air.",
         "'not' negates the gold words"),
        ("How many people?", "2 million", "2 billion", "gold number 2 million missing"),
        ("Who?", "Thomas Newcomen", "James Watt", "0 of 2 key words found (need 50%); missing thomas, newcomen"),
        ("Who?", "Thomas Newcomen", "The engine was invented by James Watt.",
         "0 of 2 key words found (need 100%); missing thomas, newcomen"),
    ],
)
def test_match_reasons(question, gold, prediction, reason):
    assert MatchGrader().grade(question, gold, prediction).reason == reason


def test_match_any_gold_and_grade_many():
    g = get_grader()  # default
    assert g.name == "match"
    assert g.grade("Who won?", ["Denver Broncos", "Broncos"], "The Broncos won.").correct is True
    rows = [
        {"question": "Who won?", "gold": "Denver Broncos", "prediction": "Denver Broncos"},
        {"question": "Who won?", "gold": ["Carolina Panthers"], "prediction": "Denver Broncos"},
        {"question": "Who won?", "golds": ["Broncos"], "prediction": "the broncos"},
        {"question": "Who won?", "gold": "Broncos", "prediction": None},  # no answer: wrong
    ]
    verdicts = g.grade_many(rows)
    assert [bool(v) for v in verdicts] == [True, False, True, False]
    assert verdicts[0].reason == "exact match"
    assert grade_rows(g, rows) == verdicts
    info = MatchGrader().explain("What century?", "nineteenth", "19th century")
    assert info["correct"] and info["keys"] == ["19"] and info["rule"] == "coverage"


# ------------------------------------------------------------------ registry


def test_registry():
    assert set(GRADERS) >= {"match", "em", "f1", "judge"}
    for name in ("match", "em", "f1"):
        g = get_grader(name)
        assert g.name == name
        v = g.grade("q", "Denver Broncos", "Denver Broncos")
        assert isinstance(v, Verdict) and v.correct is True and v.reason
    assert get_grader("em").grade("q", "Denver Broncos", "the Broncos") == Verdict(False, "no exact match")
    assert get_grader("em").grade("q", "Denver Broncos", "Denver Broncos").reason == "exact match"
    f1 = get_grader("f1").grade("q", "Denver Broncos", "the Broncos")  # F1 = 2/3
    assert f1 == Verdict(True, "token F1 0.67 >= 0.5")
    assert not get_grader("f1", threshold=0.9).grade("q", "Denver Broncos", "the Broncos")
    inst = MatchGrader()
    assert get_grader(inst) is inst
    with pytest.raises(GraderError, match="unknown grader 'nope'"):
        get_grader("nope")
    with pytest.raises(GraderError, match="bad options"):
        get_grader("em", colour="red")


def test_calibrate_small():
    rows = [
        {"question": "q", "gold": "a b", "prediction": "a b", "gpt41_correct": True, "source": "x"},
        {"question": "q", "gold": "a b", "prediction": "zzz", "gpt41_correct": True, "source": "x"},
        {"question": "q", "gold": "a b", "prediction": "a b", "gpt41_correct": False, "source": "y"},
        {"question": "q", "gold": "a b", "prediction": "zzz", "gpt41_correct": False, "source": "y"},
    ]
    r = calibrate(rows, "em")
    assert r["grader"] == "em" and r["n"] == 4
    assert r["confusion"] == {"tp": 1, "fp": 1, "fn": 1, "tn": 1}
    assert r["agreement"] == 0.5
    assert r["grader_accuracy"] == 0.5 and r["reference_accuracy"] == 0.5 and r["bias"] == 0.0
    assert r["by_source"]["x"]["confusion"] == {"tp": 1, "fp": 0, "fn": 1, "tn": 0}
    with pytest.raises(KeyError):
        calibrate([{"question": "q", "gold": "a", "prediction": "a"}])


def test_calibrate_cuts_answers_for_em_and_f1():
    rows = [{"question": "When?", "gold": "1979", "gpt41_correct": True,
             "prediction": "1979\n\nQuestion: Topic: x\nWhen?\nAnswer:\n1980"}]
    for name in ("em", "f1"):
        assert calibrate(rows, name)["agreement"] == 1.0  # cut at ANSWER_STOPS first
        assert calibrate(rows, name, stops=())["agreement"] == 0.0  # graded whole
    assert get_grader("match").answer_stops == ()  # match cuts continuations itself
    assert calibrate(rows, "match")["agreement"] == 1.0


# ------------------------------------------------------------------ calibration data


@pytest.fixture(scope="module")
def calibration_rows():
    d = _data_dir()
    if not (d / "reference" / "judge_calibration").is_dir():
        pytest.skip(
            f"judge calibration data not found under {d}/reference/judge_calibration; "
            "set SEALBENCH_DATA_DIR to the shared data folder"
        )
    return load_calibration_rows(d)


def test_load_calibration_rows(calibration_rows):
    assert len(calibration_rows) == 3896
    assert {r["source"] for r in calibration_rows} == {"base", "gpt4_1"}
    assert all(isinstance(r["gpt41_correct"], bool) for r in calibration_rows)


def test_load_calibration_rows_missing(tmp_path, monkeypatch):
    with pytest.raises(FileNotFoundError, match="SEALBENCH_DATA_DIR"):
        load_calibration_rows(tmp_path)
    monkeypatch.delenv("SEALBENCH_DATA_DIR", raising=False)
    with pytest.raises(FileNotFoundError, match="SEALBENCH_DATA_DIR"):
        load_calibration_rows()


def test_match_agrees_with_gpt41(calibration_rows):
    """Regression guard at the measured level (docs/grading.md): 88.9% overall agreement
    (base 89.7%, gpt4_1 88.0%), accuracy bias -1.4 pp (base -2.0, gpt4_1 -0.8); before the
    answer-shape rules of issue 20 88.7%, -1.1 pp; before the rule changes of 2026-11-30 88.1%,
    -0.5 pp. Rule-based matching tops out near here on this data;
    see test_default_grader_meets_target for the unmet 92% goal."""
    r = calibrate(calibration_rows, "match")
    assert r["n"] == 3896
    assert r["agreement"] >= 0.885, r
    assert abs(r["bias"]) <= 0.02, r
    for source, m in r["by_source"].items():
        assert m["agreement"] >= 0.875, (source, m)
        assert abs(m["bias"]) <= 0.02, (source, m)
    # far better than the official metrics, which miss most free-form answers
    assert r["agreement"] > calibrate(calibration_rows, "f1")["agreement"] + 0.1


def test_match_held_out_by_question(calibration_rows):
    """Held out by question (group 5-fold, partial_threshold chosen on the other folds):
    89.0%, bias -1.9 pp (before issue 20's answer-shape rules 88.8%, -1.8 pp; before the
    2026-11-30 rule changes 88.2%, -1.3 pp)."""
    r = calibrate_held_out(calibration_rows, "match")
    assert r["agreement"] >= 0.885 and abs(r["bias"]) <= 0.02, r
    assert len(r["chosen"]) == 5


def test_two_key_word_bucket(calibration_rows):
    """Golds with two key words of which the prediction matches one: match agreed with GPT-4.1
    on 123 of 178 such rows before the 2026-11-30 rules (replacement, acronyms, qualifiers and
    prepositions, "X and Y"); then on 143 of 180 (on the original 178 rows: 141). Since the
    answer-shape rules of issue 20, a soft match on a question word is no evidence, so 6 of those
    rows (all agreeing, all still agreeing) fall to no key word found: 137 of 174."""
    g = MatchGrader()
    agree = n = 0
    for r in calibration_rows:
        info = g.explain(r["question"], r["gold"], r["prediction"])
        if len(info["keys"]) == 2 and info["coverage"] == 0.5:
            n += 1
            agree += info["correct"] == r["gpt41_correct"]
    assert n == 174 and agree >= 137, (agree, n)


def test_cutting_calibration_answers(calibration_rows):
    """The calibration predictions are not cut (582 change under cut_answer, 261 beyond
    whitespace). Cutting them changes 5 of match's verdicts (lists after "...the following:\n\n";
    7 before the answer-shape rules of issue 20) and costs it 0.08 points (3 rows), so match is
    calibrated on whole answers; em/f1 use cut answers."""
    cut = [cut_answer(r["prediction"], ANSWER_STOPS) for r in calibration_rows]
    assert sum(c != r["prediction"].strip() for c, r in zip(cut, calibration_rows)) == 261
    whole = calibrate(calibration_rows, "match")
    cut_report = calibrate(calibration_rows, "match", stops=ANSWER_STOPS)
    assert whole["agreement"] - cut_report["agreement"] == pytest.approx(3 / 3896)


def test_label_noise_ceiling(calibration_rows):
    """GPT-4.1's own inconsistency is far below the 8 missing points: among rows that share
    question, gold and normalised answer region, only 16 rows disagree with their group's
    majority, so a deterministic grader could reach 99.6% (docs/grading.md)."""
    groups: dict = {}
    for r in calibration_rows:
        key = (r["title"], r["question"], r["gold"], normalize_answer(answer_region(r["prediction"])))
        groups.setdefault(key, []).append(bool(r["gpt41_correct"]))
    minority = sum(min(sum(v), len(v) - sum(v)) for v in groups.values())
    assert minority == 16
    assert 1 - minority / len(calibration_rows) > 0.99


@pytest.mark.xfail(
    reason="target not met: the default grader 'match' agrees 89.0% held-out by question "
    "(88.9% in-sample; base 89.7%, gpt4_1 88.0%), bias -0.8..-2.4 pp; a learned combiner with "
    "MiniLM embedding features measured 87.9% held-out (docs/grading.md)",
    strict=True,
)
def test_default_grader_meets_target(calibration_rows):
    """The issue's target for the default grader: >= 92% agreement with GPT-4.1 and accuracy
    within 2 points, measured held-out (group 5-fold by question) overall and per file."""
    assert DEFAULT_GRADER == "match"  # a learned default would be scored on its own held-out folds
    overall = calibrate_held_out(calibration_rows, "match", k=5)
    assert abs(overall["bias"]) <= 0.02, overall
    for source in ("base", "gpt4_1"):
        m = overall["by_source"][source]
        assert abs(m["bias"]) <= 0.02, (source, m)
    assert overall["agreement"] >= 0.92, overall


def test_question_folds_and_metrics():
    rows = [{"title": "t", "question": q} for q in ("a", "b", "a")]
    folds = question_folds(rows)
    assert folds[0] == folds[2] and all(0 <= f < 5 for f in folds)
    m = agreement_metrics([Verdict(True), False, True], [True, True, False])
    assert m["confusion"] == {"tp": 1, "fp": 1, "fn": 1, "tn": 0}


# ------------------------------------------------------------------ the LLM judge


def test_parse_yes_no():
    for text in ("yes", "Yes.", "YES", "**Yes**", "yes, it conveys the gold", "Answer: yes", " 'yes'"):
        assert parse_yes_no(text) is True, text
    for text in ("no", "No.", "**No**", "no - it contradicts", "Answer: No", "Verdict: no"):
        assert parse_yes_no(text) is False, text
    for text in ("", None, "maybe", "Both yes and no", "I cannot tell"):
        assert parse_yes_no(text) is None, text
    assert parse_yes_no("The answer is correct, so yes") is True


@pytest.fixture
def judge_env(monkeypatch):
    for name in ("SEALBENCH_JUDGE_BASE_URL", "OPENAI_BASE_URL", "SEALBENCH_JUDGE_MODEL", "OPENAI_API_KEY"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("SEALBENCH_JUDGE_API_KEY", "test-key")
    # never send loopback traffic through a proxy someone configured
    monkeypatch.setenv("NO_PROXY", "127.0.0.1,localhost")
    monkeypatch.setenv("no_proxy", "127.0.0.1,localhost")
    return monkeypatch


def test_judge_needs_api_key(judge_env):
    judge_env.delenv("SEALBENCH_JUDGE_API_KEY")
    with pytest.raises(GraderError, match="SEALBENCH_JUDGE_API_KEY"):
        get_grader("judge", base_url="http://127.0.0.1:9/v1")


def test_judge_unreachable_endpoint(judge_env):
    judge = get_grader("judge", base_url="http://127.0.0.1:9/v1", timeout=3)
    start = time.monotonic()
    with pytest.raises(GraderError) as err:
        judge.grade("Who?", "Otrar", "Otrar")
    elapsed = time.monotonic() - start
    assert elapsed < 15, elapsed
    msg = str(err.value)
    assert "\n" not in msg
    assert "127.0.0.1:9" in msg and "SEALBENCH_JUDGE_BASE_URL" in msg
    assert judge.stats["requests"] == 3  # one try + 2 retries


class _FakeOpenAI(BaseHTTPRequestHandler):
    """A minimal OpenAI-compatible /v1/chat/completions: says yes when the student answer
    contains the gold answer (case-insensitive), else no, in slightly varied formats."""

    requests: list = []
    known_models = {"fake-judge", "gpt-4.1"}
    reply_override: str | None = None

    def log_message(self, *args):  # keep pytest output clean
        pass

    def _send(self, code: int, body: dict):
        data = json.dumps(body).encode()
        self.send_response(code)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def do_POST(self):
        body = json.loads(self.rfile.read(int(self.headers.get("Content-Length", 0))) or b"{}")
        type(self).requests.append({"path": self.path, "body": body,
                                    "auth": self.headers.get("Authorization")})
        if not self.path.endswith("/chat/completions"):
            return self._send(404, {"error": {"message": "no such route", "type": "invalid_request_error"}})
        if body.get("model") not in self.known_models:
            return self._send(404, {"error": {"message": f"model {body.get('model')} not found",
                                              "type": "invalid_request_error", "code": "model_not_found"}})
        prompt = body["messages"][-1]["content"]
        gold = re.search(r"^Gold answer: (.*)$", prompt, re.M).group(1).strip()
        student = re.search(r"^Student answer: (.*)$", prompt, re.M).group(1).strip()
        if self.reply_override is not None:
            reply = self.reply_override
        else:
            reply = "Yes." if gold.lower() in student.lower() else "**No**"
        self._send(200, {
            "id": "chatcmpl-fake", "object": "chat.completion", "created": 0, "model": body["model"],
            "choices": [{"index": 0, "finish_reason": "stop",
                         "message": {"role": "assistant", "content": reply}}],
            "usage": {"prompt_tokens": 1, "completion_tokens": 1, "total_tokens": 2},
        })


@pytest.fixture
def fake_server():
    _FakeOpenAI.requests = []
    _FakeOpenAI.reply_override = None
    server = ThreadingHTTPServer(("127.0.0.1", 0), _FakeOpenAI)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/v1"
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)


def test_judge_against_fake_server(judge_env, fake_server):
    judge_env.setenv("SEALBENCH_JUDGE_BASE_URL", fake_server)
    judge_env.setenv("SEALBENCH_JUDGE_MODEL", "fake-judge")
    judge = get_grader("judge", timeout=5)
    assert judge.name == "judge" and judge.model == "fake-judge" and judge.base_url == fake_server
    assert judge.grade("Which town?", "Otrar", "The massacre was at Otrar.") == Verdict(True, "Yes.")
    assert judge.grade("Which town?", "Otrar", "Karakorum") == Verdict(False, "**No**")
    assert judge.grade("What year?", 1979, 1979).correct  # numbers are sent as their text
    with pytest.raises(GraderError, match="prediction must be a string or a number"):
        judge.grade("What year?", "1979", ["1979"])
    # several golds: any accepted gold counts
    assert judge.grade("Who won?", ["Denver Broncos", "Broncos"], "The Broncos won").correct is True
    rows = [
        {"question": "Which town?", "gold": "Otrar", "prediction": "Otrar"},
        {"question": "Which town?", "gold": "Otrar", "prediction": "Bukhara"},
        {"question": "Which town?", "gold": "Otrar", "prediction": "Otrar"},  # cached
    ]
    assert [bool(v) for v in judge.grade_many(rows)] == [True, False, True]
    assert judge.stats["cached"] >= 1

    first = _FakeOpenAI.requests[0]
    assert first["path"] == "/v1/chat/completions"
    assert first["auth"] == "Bearer test-key"
    assert first["body"]["model"] == "fake-judge"
    assert first["body"]["temperature"] == 0
    prompt = first["body"]["messages"][0]["content"]
    assert "Question: Which town?" in prompt and "Gold answer: Otrar" in prompt
    assert "'yes' or 'no'" in prompt and "must not contradict" in prompt

    # a reply that is neither yes nor no counts as incorrect and is counted
    _FakeOpenAI.reply_override = "I am not sure."
    verdict = judge.grade("Q2?", "x", "x")
    assert verdict.correct is False and verdict.reason == "neither yes nor no: 'I am not sure.'"
    assert judge.stats["unparsed"] == 1


def test_judge_unknown_model(judge_env, fake_server):
    judge = get_grader("judge", base_url=fake_server, model="no-such-model", timeout=5)
    with pytest.raises(GraderError, match="SEALBENCH_JUDGE_MODEL"):
        judge.grade("q", "a", "a")


def test_grading_imports_only_stdlib():
    package = Path(grading.__file__).parent
    allowed = {"__future__", "json", "numbers", "os", "re", "string", "time", "unicodedata",
               "collections", "dataclasses", "decimal", "pathlib", "typing", "zlib", ""}  # "": .module
    modules = sorted(package.glob("*.py"))
    assert {m.stem for m in modules} >= {"__init__", "metrics", "match", "judge", "calibration", "answers"}
    for module in modules:
        lines = module.read_text().splitlines()
        assert len(lines) <= 400, (module.name, len(lines))
        for ln in lines:
            if re.match(r"^(import|from) ", ln):
                assert ln.split()[1].split(".")[0] in allowed, (module.name, ln)
