"""Tests for sealbench.grading: SQuAD metrics, the match grader, the registry, the LLM judge."""
from __future__ import annotations

import json
import os
import re
import threading
import time
import zlib
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from sealbench import grading
from sealbench.grading import (
    DEFAULT_GRADER,
    GRADERS,
    GraderError,
    MatchGrader,
    answer_region,
    calibrate,
    exact_match,
    f1_score,
    get_grader,
    load_calibration_rows,
    normalize_answer,
    parse_yes_no,
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
    ],
)
def test_match_rules(question, gold, prediction, expected):
    assert MatchGrader().grade(question, gold, prediction) is expected


def test_match_any_gold_and_grade_many():
    g = get_grader()  # default
    assert g.name == "match"
    assert g.grade("Who won?", ["Denver Broncos", "Broncos"], "The Broncos won.") is True
    rows = [
        {"question": "Who won?", "gold": "Denver Broncos", "prediction": "Denver Broncos"},
        {"question": "Who won?", "gold": ["Carolina Panthers"], "prediction": "Denver Broncos"},
        {"question": "Who won?", "golds": ["Broncos"], "prediction": "the broncos"},
    ]
    assert g.grade_many(rows) == [True, False, True]
    info = MatchGrader().explain("What century?", "nineteenth", "19th century")
    assert info["correct"] and info["keys"] == ["19"]


# ------------------------------------------------------------------ registry


def test_registry():
    assert set(GRADERS) >= {"match", "em", "f1", "judge"}
    for name in ("match", "em", "f1"):
        g = get_grader(name)
        assert g.name == name
        assert isinstance(g.grade("q", "Denver Broncos", "Denver Broncos"), bool)
        assert g.grade("q", "Denver Broncos", "Denver Broncos") is True
    assert get_grader("em").grade("q", "Denver Broncos", "the Broncos") is False
    assert get_grader("f1").grade("q", "Denver Broncos", "the Broncos") is True  # F1 = 2/3
    assert get_grader("f1", threshold=0.9).grade("q", "Denver Broncos", "the Broncos") is False
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
    """Regression guard at the measured level (docs/grading.md): 88.1% overall agreement
    (base 89.0%, gpt4_1 87.2%), accuracy bias -0.5 pp (base -1.2, gpt4_1 +0.3). Rule-based
    matching tops out near here on this data; see test_default_grader_meets_target for the unmet
    92% goal."""
    r = calibrate(calibration_rows, "match")
    assert r["n"] == 3896
    assert r["agreement"] >= 0.875, r
    assert abs(r["bias"]) <= 0.02, r
    for source, m in r["by_source"].items():
        assert m["agreement"] >= 0.865, (source, m)
        assert abs(m["bias"]) <= 0.02, (source, m)
    # far better than the official metrics, which miss most free-form answers
    assert r["agreement"] > calibrate(calibration_rows, "f1")["agreement"] + 0.1


def _question_folds(rows, k=5):
    """Deterministic group k-fold: whole questions (title + question) go to one fold."""
    return [zlib.crc32((r.get("title", "") + "\x00" + r["question"]).encode()) % k for r in rows]


def _held_out_match(rows, k=5, grid=(0.4, 0.5, 0.6)):
    """Held-out estimate for ``match``: its one tuned knob (``partial_threshold``) is chosen on
    the training folds (best agreement with |bias| <= 2 pp) and scored on the held-out fold."""
    ref = [bool(r["gpt41_correct"]) for r in rows]
    verdicts = {t: MatchGrader(partial_threshold=t).grade_many(rows) for t in grid}
    folds = _question_folds(rows, k)
    out = [None] * len(rows)
    for f in range(k):
        train = [i for i in range(len(rows)) if folds[i] != f]

        def score(t):
            m = grading._metrics([verdicts[t][i] for i in train], [ref[i] for i in train])
            return (abs(m["bias"]) <= 0.02, m["agreement"])

        best = max(grid, key=score)
        for i in range(len(rows)):
            if folds[i] == f:
                out[i] = verdicts[best][i]
    return out


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
    reason="target not met: the default grader 'match' agrees 88.2% held-out by question "
    "(88.1% in-sample; base 89.0%, gpt4_1 87.2%), bias -0.5..-2.0 pp; a learned combiner with "
    "MiniLM embedding features measured 87.9% held-out (docs/grading.md)",
    strict=True,
)
def test_default_grader_meets_target(calibration_rows):
    """The issue's target for the default grader: >= 92% agreement with GPT-4.1 and accuracy
    within 2 points, measured held-out (group 5-fold by question) overall and per file."""
    assert DEFAULT_GRADER == "match"  # a learned default would be scored on its own held-out folds
    verdicts = _held_out_match(calibration_rows)
    ref = [bool(r["gpt41_correct"]) for r in calibration_rows]
    overall = grading._metrics(verdicts, ref)
    assert abs(overall["bias"]) <= 0.02, overall
    for source in ("base", "gpt4_1"):
        idx = [i for i, r in enumerate(calibration_rows) if r["source"] == source]
        m = grading._metrics([verdicts[i] for i in idx], [ref[i] for i in idx])
        assert abs(m["bias"]) <= 0.02, (source, m)
    assert overall["agreement"] >= 0.92, overall


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
    assert judge.grade("Which town?", "Otrar", "The massacre was at Otrar.") is True
    assert judge.grade("Which town?", "Otrar", "Karakorum") is False
    # several golds: any accepted gold counts
    assert judge.grade("Who won?", ["Denver Broncos", "Broncos"], "The Broncos won") is True
    rows = [
        {"question": "Which town?", "gold": "Otrar", "prediction": "Otrar"},
        {"question": "Which town?", "gold": "Otrar", "prediction": "Bukhara"},
        {"question": "Which town?", "gold": "Otrar", "prediction": "Otrar"},  # cached
    ]
    assert judge.grade_many(rows) == [True, False, True]
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
    assert judge.grade("Q2?", "x", "x") is False
    assert judge.stats["unparsed"] == 1


def test_judge_unknown_model(judge_env, fake_server):
    judge = get_grader("judge", base_url=fake_server, model="no-such-model", timeout=5)
    with pytest.raises(GraderError, match="SEALBENCH_JUDGE_MODEL"):
        judge.grade("q", "a", "a")


def test_grading_imports_only_stdlib():
    src = Path(grading.__file__).read_text()
    top_level = [ln for ln in src.splitlines() if re.match(r"^(import|from) ", ln)]
    allowed = {"__future__", "json", "os", "re", "string", "time", "unicodedata", "collections",
               "pathlib", "typing"}
    for ln in top_level:
        mod = ln.split()[1].split(".")[0]
        assert mod in allowed, ln
