"""Grading SQuAD-style answers: official EM/F1, a deterministic ``match`` grader, and an LLM judge.

SEAL grades free-form model answers with GPT-4.1 and a yes/no instruction ("does the student
answer convey the gold answer? extra detail is fine, contradictions are not"). This module offers

* :func:`normalize_answer`, :func:`exact_match`, :func:`f1_score`: the official SQuAD v1.1 metrics;
* a tiny grader registry (:data:`GRADERS`, :func:`get_grader`) with four graders:

  - ``match`` (default): deterministic, offline, stdlib-only rules tuned to agree with GPT-4.1's
    verdicts on SEAL's released evaluation answers (see ``docs/grading.md`` for measured agreement);
  - ``em``: official exact match against any gold;
  - ``f1``: official token F1 >= 0.5 against the best gold;
  - ``judge``: SEAL's yes/no LLM judge through any OpenAI-compatible chat endpoint;

* :func:`calibrate` / :func:`load_calibration_rows`: measure any grader against the GPT-4.1 verdicts.

Only the standard library is imported here; the ``openai`` SDK is imported lazily by the judge.
"""
from __future__ import annotations

import json
import os
import re
import string
import time
import unicodedata
from collections import Counter
from pathlib import Path
from typing import Callable, Iterable, Mapping, Sequence

__all__ = [
    "GraderError",
    "normalize_answer",
    "exact_match",
    "f1_score",
    "Grader",
    "MatchGrader",
    "ExactMatchGrader",
    "F1Grader",
    "JudgeGrader",
    "GRADERS",
    "DEFAULT_GRADER",
    "get_grader",
    "parse_yes_no",
    "JUDGE_PROMPT",
    "calibrate",
    "load_calibration_rows",
    "answer_region",
]


class GraderError(RuntimeError):
    """A grader cannot work as configured; the message says what to set or fix."""


# --------------------------------------------------------------------------------------------
# Official SQuAD v1.1 metrics
# --------------------------------------------------------------------------------------------

_ARTICLES_RE = re.compile(r"\b(a|an|the)\b")
_PUNCT = frozenset(string.punctuation)


def normalize_answer(s: str) -> str:
    """SQuAD v1.1 normalisation: lower case, drop punctuation and articles, squeeze whitespace."""
    s = s.lower()
    s = "".join(ch for ch in s if ch not in _PUNCT)
    s = _ARTICLES_RE.sub(" ", s)
    return " ".join(s.split())


def _as_golds(golds: str | Iterable[str]) -> list[str]:
    if isinstance(golds, str):
        return [golds]
    out = [g for g in golds if isinstance(g, str)]
    return out


def exact_match(prediction: str, golds: str | Iterable[str]) -> float:
    """1.0 if the normalised prediction equals any normalised gold, else 0.0."""
    p = normalize_answer(prediction or "")
    return float(any(p == normalize_answer(g) for g in _as_golds(golds)))


def _f1_single(prediction: str, gold: str) -> float:
    p_toks = normalize_answer(prediction).split()
    g_toks = normalize_answer(gold).split()
    common = Counter(p_toks) & Counter(g_toks)
    same = sum(common.values())
    if same == 0:
        return 0.0
    precision = same / len(p_toks)
    recall = same / len(g_toks)
    return 2 * precision * recall / (precision + recall)


def f1_score(prediction: str, golds: str | Iterable[str]) -> float:
    """Official SQuAD token F1, maximised over the golds (0.0 when there is no gold)."""
    return max((_f1_single(prediction or "", g) for g in _as_golds(golds)), default=0.0)


# --------------------------------------------------------------------------------------------
# Grader base class
# --------------------------------------------------------------------------------------------


class Grader:
    """A grader says whether ``prediction`` answers ``question`` correctly given the gold answer(s)."""

    name = "base"

    def grade(self, question: str, golds: str | Sequence[str], prediction: str) -> bool:
        raise NotImplementedError

    def grade_many(self, rows: Iterable[Mapping]) -> list[bool]:
        """Grade dict rows with keys ``question``, ``gold`` (str or list; ``golds`` also accepted)
        and ``prediction``."""
        return [self.grade(*_row_fields(r)) for r in rows]

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.name!r}>"


def _row_fields(row: Mapping) -> tuple[str, str | list[str], str]:
    if "gold" in row:
        gold = row["gold"]
    elif "golds" in row:
        gold = row["golds"]
    else:
        raise KeyError("grading row needs a 'gold' (or 'golds') field")
    return row.get("question", "") or "", gold, row.get("prediction", "") or ""


class ExactMatchGrader(Grader):
    """Official SQuAD exact match against any gold."""

    name = "em"

    def grade(self, question, golds, prediction) -> bool:
        return exact_match(prediction, golds) == 1.0


class F1Grader(Grader):
    """Official SQuAD token F1 against the best gold, correct when >= ``threshold`` (0.5)."""

    name = "f1"

    def __init__(self, threshold: float = 0.5):
        self.threshold = float(threshold)

    def grade(self, question, golds, prediction) -> bool:
        return f1_score(prediction, golds) >= self.threshold


# --------------------------------------------------------------------------------------------
# The deterministic ``match`` grader
# --------------------------------------------------------------------------------------------
#
# The rules below come from reading where plain containment / EM / F1 disagree with GPT-4.1 on
# SEAL's released answers (reference/judge_calibration). Each rule is general (no per-question
# special cases); the comment on each says which disagreement it addresses.

# Base models often keep generating after their answer: a new few-shot "Q:"/"Question:" block, a
# passage, or an echoed system prompt. Text after such a marker is not part of the answer, and it
# can contain the gold by accident (a repeated question), so only the text before it is graded.
_CONTINUATION_RE = re.compile(
    r"\n\s*(?:Q\s*:|Question\s*:|Passage\s*:|Context\s*:|Topic\s*:|Title\s*:|You are an? )"
    r"|\n\s*\n\s*(?:A\s*:|Answer\s*:)"
)


def answer_region(prediction: str) -> str:
    """The part of a prediction that is graded: everything before a runaway continuation."""
    m = _CONTINUATION_RE.search(prediction or "")
    return prediction[: m.start()] if m else (prediction or "")


# Words that carry no answer content. Removing them from the gold lets "in a number of stages"
# match "in a series of stages" on its content words and keeps article/preposition differences
# from mattering.
_STOPWORDS = frozenset(
    """a an the of in on at to for by with and or nor is are was were be been being it its this that
    these those as from which who whom whose what when where how why do does did has have had their
    his her they he she them there here than into onto over about also such so s per percent cent
    very""".split()
)

# A negation right before the answer ("was not caused by bad air", "is not among the boards")
# reverses it; GPT-4.1 marks those answers wrong even though the gold words are present.
# ("t" is what "n't" becomes after tokenisation.)
_NEGATIONS = frozenset(
    "not no never neither nor cannot t without none nothing incorrect false unlikely".split()
)
_NEGATION_WINDOW = 3  # tokens before the first matched gold word (and all tokens inside the match)

# Number words and ordinals become digits so "three" matches "3" and "nineteenth" matches "19th".
_UNITS = ("zero one two three four five six seven eight nine ten eleven twelve thirteen fourteen "
          "fifteen sixteen seventeen eighteen nineteen").split()
_TENS = "twenty thirty forty fifty sixty seventy eighty ninety".split()
_ORDINALS = ("zeroth first second third fourth fifth sixth seventh eighth ninth tenth eleventh "
             "twelfth thirteenth fourteenth fifteenth sixteenth seventeenth eighteenth "
             "nineteenth").split()
_ORDINAL_TENS = ("twentieth thirtieth fortieth fiftieth sixtieth seventieth eightieth "
                 "ninetieth").split()
_NUMBER_WORDS: dict[str, int] = {}
_NUMBER_WORDS.update({w: i for i, w in enumerate(_UNITS)})
_NUMBER_WORDS.update({w: i for i, w in enumerate(_ORDINALS)})
_NUMBER_WORDS.update({w: 20 + 10 * i for i, w in enumerate(_TENS)})
_NUMBER_WORDS.update({w: 20 + 10 * i for i, w in enumerate(_ORDINAL_TENS)})

_MONTHS = frozenset(
    "january february march april may june july august september october november december".split()
)

_TOKEN_RE = re.compile(r"\d+(?:\.\d+)?[a-z]*|[^\W\d_]+")
_NUMERIC_RE = re.compile(r"(\d+(?:\.\d+)?)(st|nd|rd|th|s)?$")


def _stem(word: str) -> str:
    """A deliberately light stemmer: plurals and -ed/-ing/-ly endings, so that "valleys" matches
    "valley" and "stolen"-style irregulars are left to the prefix rule in :func:`_similar`."""
    if word[0].isdigit():
        m = _NUMERIC_RE.match(word)
        if not m:
            return word
        digits, suffix = m.groups()
        if suffix == "s" and len(digits) == 4 and digits.endswith("0"):
            return digits[:3] + "x"  # a decade: "1970s" -> "197x", matched by any year 1970-1979
        return digits  # "19th" -> "19", "1970" stays
    if len(word) <= 3:
        return word
    if word.endswith("ies") and len(word) > 4:
        return word[:-3] + "y"
    if re.search(r"(ss|x|ch|sh|z)es$", word):
        return word[:-2]
    for suffix in ("ing", "ed", "ly"):
        if word.endswith(suffix) and len(word) - len(suffix) >= 4:
            return word[: -len(suffix)]
    if word.endswith("s") and not word.endswith(("ss", "us", "is")):
        return word[:-1]
    return word


def _tokens(text: str) -> list[str]:
    """Canonical tokens: accents folded ("Ögedei" = "Ogedei"), lower case, possessive 's dropped,
    thousands separators removed ("50,000" = "50000"), number words as digits, light stemming.
    Any non-alphanumeric character separates tokens (unlike SQuAD's normalisation, which only
    strips ASCII punctuation and so keeps "Miller–Urey" as one token)."""
    s = unicodedata.normalize("NFKD", text or "")
    s = "".join(c for c in s if not unicodedata.combining(c)).lower()
    s = re.sub(r"(?<=\d),(?=\d{3})", "", s)
    s = re.sub(r"['’]s\b", "", s)
    raw = _TOKEN_RE.findall(s)
    out: list[str] = []
    i = 0
    while i < len(raw):
        w = raw[i]
        if w in _NUMBER_WORDS:
            v = _NUMBER_WORDS[w]
            # "twenty five" / "twenty-five" -> 25
            nxt = raw[i + 1] if i + 1 < len(raw) else ""
            if v >= 20 and v % 10 == 0 and 0 < _NUMBER_WORDS.get(nxt, 0) < 10:
                v += _NUMBER_WORDS[nxt]
                i += 1
            out.append(str(v))
        else:
            out.append(_stem(w))
        i += 1
    return out


def _is_number(tok: str) -> bool:
    return tok[0].isdigit()


def _number_matches(gold_tok: str, pred_tok: str) -> bool:
    """Numbers must agree exactly, except that a decade matches any year in it and a prediction
    may be more precise than the gold ("$170.4 billion" conveys "$170 billion"; "1975" does not
    convey "1979", "540,819" does not convey "540,800", and "1.5" does not convey "2")."""
    if gold_tok == pred_tok:
        return True
    if not _is_number(pred_tok) or pred_tok.endswith("x"):
        return False
    if gold_tok.endswith("x"):  # decade
        return len(pred_tok) == 4 and pred_tok.isdigit() and pred_tok[:3] == gold_tok[:3]
    if "." not in pred_tok:
        return False
    try:
        decimals = len(gold_tok.split(".")[1]) if "." in gold_tok else 0
        # Strictly within half a unit of the gold's last digit: not round(), whose half-to-even
        # rule would let "1.5" convey "2" (and "2.5" convey "2").
        return abs(float(pred_tok) - float(gold_tok)) < 0.5 * 10 ** -decimals - 1e-12
    except ValueError:
        return False


def _similar(gold_tok: str, pred_tok: str) -> bool:
    """Two word tokens match when equal, or when they share a long common prefix: this covers
    derivations the light stemmer misses ("democracy"/"democratic", "immunodeficiencies"/
    "immunodeficiency", "Catholic"/"Catholicism", "fragmentation"/"fragmented")."""
    if _is_number(gold_tok) or _is_number(pred_tok):
        return _is_number(gold_tok) and _number_matches(gold_tok, pred_tok)
    if gold_tok == pred_tok:
        return True
    short, long_ = sorted((gold_tok, pred_tok), key=len)
    if len(short) >= 4 and long_.startswith(short):
        return True
    common = 0
    for a, b in zip(gold_tok, pred_tok):
        if a != b:
            break
        common += 1
    return common >= 5 and common >= 0.75 * len(short)


class MatchGrader(Grader):
    """Deterministic rule-based grader approximating SEAL's GPT-4.1 judge (the default grader).

    For each gold (a prediction is correct if it matches any gold):

    1. Grade only :func:`answer_region` of the prediction (drop runaway continuations).
    2. Dates: a gold like "10 November 1483" is conveyed by its year ("1483", "November 10, 1483"),
       but a prediction naming a different month or day contradicts it.
    3. Key words: the gold's content words (stop words removed) that do not already appear in the
       question. Words copied from the question ("What type of *rally*..." -> gold "pep *rally*")
       say nothing about whether the answer is right; if every gold word is in the question, all
       are kept.
    4. Numbers: if the gold's key words contain numbers, at least one of them must appear in the
       prediction (a wrong number is a wrong answer whatever else matches). 1 is exempt: as "one"
       it is usually a pronoun ("one of the most common").
    5. Coverage: the fraction of key words found in the prediction (soft word match,
       :func:`_similar`). Required coverage: all key words for golds of one or two key words;
       ``partial_threshold`` (0.5) for longer golds, which GPT-4.1 accepts when paraphrased in
       part (0.6 agrees 0.2 pp more often but under-counts accuracy by 1.5 pp); and
       ``short_threshold`` (0.5) when the prediction itself is a short phrase of at most
       ``short_answer_tokens`` tokens (GPT-4.1 accepts "Euler" for "Leonhard Euler", "Antigen"
       for "an antigen from a pathogen").
    6. Negation: a negation word within 3 tokens before the first matched key word, or between
       matched key words ("the plague was not caused by bad air"), makes the answer wrong unless
       the gold has it too or the question itself is negated ("What does X not do?" -> "It does
       not eliminate the accusing law").
    """

    name = "match"

    def __init__(
        self,
        partial_threshold: float = 0.5,
        short_answer_tokens: int = 5,
        short_threshold: float = 0.5,
    ):
        self.partial_threshold = float(partial_threshold)
        self.short_answer_tokens = int(short_answer_tokens)
        self.short_threshold = float(short_threshold)

    # -- public -------------------------------------------------------------------------------

    def grade(self, question: str, golds: str | Sequence[str], prediction: str) -> bool:
        return any(self.explain(question, g, prediction)["correct"] for g in _as_golds(golds))

    def explain(self, question: str, gold: str, prediction: str) -> dict:
        """The verdict for one gold with the evidence behind it (for debugging and docs)."""
        pred_toks = _tokens(answer_region(prediction))
        gold_toks = _tokens(gold)
        info: dict = {"correct": False, "rule": "", "keys": [], "coverage": 0.0}
        if not pred_toks or not gold_toks:
            info["rule"] = "empty"
            return info

        if self._is_date(gold_toks):
            ok, rule = self._grade_date(gold_toks, pred_toks)
            info.update(correct=ok, rule=rule, coverage=float(ok))
            return info

        keys = self._key_tokens(question, gold_toks)
        info["keys"] = keys
        pred_set = set(pred_toks)

        numbers = [t for t in keys if _is_number(t) and t != "1"]
        if numbers and not any(_number_matches(t, p) for t in numbers for p in pred_set):
            info["rule"] = "number-missing"
            return info

        positions = []
        for k in keys:
            pos = next((i for i, p in enumerate(pred_toks) if _similar(k, p)), None)
            if pos is not None:
                positions.append(pos)
        coverage = len(positions) / len(keys)
        info["coverage"] = coverage

        if positions and not (set(_tokens(question)) & _NEGATIONS):
            # look just before the matched answer and inside it ("the plague was not caused by
            # bad air"), skipping negations the gold itself contains ("would not be safe")
            first, last = min(positions), max(positions)
            window = pred_toks[max(0, first - _NEGATION_WINDOW): last]
            if any(t in _NEGATIONS and t not in gold_toks for t in window):
                info["rule"] = "negated"
                return info

        threshold = 1.0 if len(keys) <= 2 else self.partial_threshold
        if len(pred_toks) <= self.short_answer_tokens:
            threshold = min(threshold, self.short_threshold)
        info["correct"] = coverage >= threshold - 1e-9
        info["rule"] = f"coverage>={threshold:g}"
        return info

    # -- helpers ------------------------------------------------------------------------------

    @staticmethod
    def _key_tokens(question: str, gold_toks: list[str]) -> list[str]:
        content = [t for t in gold_toks if t not in _STOPWORDS] or gold_toks
        q = set(_tokens(question))
        novel = [t for t in content if t not in q]
        return novel or content

    @staticmethod
    def _is_date(gold_toks: list[str]) -> bool:
        return any(t in _MONTHS for t in gold_toks) and any(
            t.isdigit() and len(t) == 4 for t in gold_toks
        )

    @staticmethod
    def _grade_date(gold_toks: list[str], pred_toks: list[str]) -> tuple[bool, str]:
        pred_set = set(pred_toks)
        years = [t for t in gold_toks if t.isdigit() and len(t) == 4]
        if not all(y in pred_set for y in years):
            return False, "date-year-missing"
        if any(t in _MONTHS for t in pred_toks):
            # the prediction commits to a month (and maybe a day): they must agree with the gold
            if not all(t in pred_set for t in gold_toks if t in _MONTHS):
                return False, "date-month-differs"
            days = [t for t in gold_toks if t.isdigit() and len(t) <= 2]
            if days and not all(d in pred_set for d in days):
                return False, "date-day-differs"
        return True, "date"


# --------------------------------------------------------------------------------------------
# The LLM judge
# --------------------------------------------------------------------------------------------

# SEAL's yes/no grading instruction (knowledge-incorporation / general-knowledge utils), in our
# words: the student answer may add detail but must convey the gold answer and not contradict it.
JUDGE_PROMPT = (
    "You are a grading assistant. Decide whether the student's answer correctly answers the "
    "question, judging only against the gold answer given below and not against outside "
    "knowledge. The student's answer may include extra information, but it must fully convey "
    "the gold answer and must not contradict it. Ignore differences of style, wording or extra "
    "details that do not change correctness. Reply with only 'yes' or 'no'.\n\n"
    "Question: {question}\n"
    "Gold answer: {gold}\n"
    "Student answer: {prediction}\n\n"
    "Is the student's answer correct according to the gold answer? Reply 'yes' or 'no'."
)

_YES_RE = re.compile(r"\byes\b", re.I)
_NO_RE = re.compile(r"\bno\b", re.I)


def parse_yes_no(text: str | None) -> bool | None:
    """``True`` for a yes, ``False`` for a no, ``None`` when the reply is neither or both.

    Accepts "yes", "Yes.", "**No**", "Answer: yes", "yes - the student ..."; the first word
    decides when it is yes/no, otherwise the reply must contain exactly one of the two words."""
    if not text:
        return None
    cleaned = re.sub(r"[^a-z\s]", " ", text.lower()).split()
    if not cleaned:
        return None
    if cleaned[0] in ("yes", "no"):
        return cleaned[0] == "yes"
    if cleaned[0] in ("answer", "verdict", "grade", "final") and len(cleaned) > 1:
        rest = [w for w in cleaned[1:] if w not in ("answer", "is")]
        if rest and rest[0] in ("yes", "no"):
            return rest[0] == "yes"
    has_yes, has_no = bool(_YES_RE.search(text)), bool(_NO_RE.search(text))
    if has_yes != has_no:
        return has_yes
    return None


def _env(*names: str) -> str | None:
    for n in names:
        v = os.environ.get(n)
        if v and v.strip():
            return v.strip()
    return None


class JudgeGrader(Grader):
    """SEAL's yes/no LLM judge through an OpenAI-compatible chat-completions endpoint.

    Settings (option first, then environment):

    * ``base_url``: ``SEALBENCH_JUDGE_BASE_URL``, then ``OPENAI_BASE_URL``; unset means the
      OpenAI API.
    * ``model``: ``SEALBENCH_JUDGE_MODEL``, default ``gpt-4.1``.
    * API key: environment only, ``SEALBENCH_JUDGE_API_KEY`` then ``OPENAI_API_KEY`` (local
      servers that ignore keys still need a non-empty value, e.g. ``EMPTY``).

    Requests use temperature 0, a ``timeout`` (20 s) and at most ``max_retries`` (2) retries on
    connection errors, timeouts, rate limits and server errors; then a :class:`GraderError` is
    raised. Replies that are neither yes nor no count as incorrect (as in SEAL) and are counted
    in ``stats["unparsed"]``. Verdicts are cached per (question, gold, prediction).
    """

    name = "judge"

    def __init__(
        self,
        base_url: str | None = None,
        model: str | None = None,
        timeout: float = 20.0,
        max_retries: int = 2,
        max_tokens: int | None = 5,
        prompt: str = JUDGE_PROMPT,
    ):
        self.base_url = base_url or _env("SEALBENCH_JUDGE_BASE_URL", "OPENAI_BASE_URL")
        self.model = model or _env("SEALBENCH_JUDGE_MODEL") or "gpt-4.1"
        self.timeout = float(timeout)
        self.max_retries = max(0, min(int(max_retries), 2))
        self.max_tokens = int(max_tokens) if max_tokens else None  # None: let the server decide
        self.prompt = prompt
        self.stats = {"requests": 0, "unparsed": 0, "cached": 0}
        self._cache: dict[tuple[str, str, str], bool] = {}
        api_key = _env("SEALBENCH_JUDGE_API_KEY", "OPENAI_API_KEY")
        if not api_key:
            raise GraderError(
                "judge grader: no API key; set SEALBENCH_JUDGE_API_KEY (or OPENAI_API_KEY) in the "
                "environment (any non-empty value for a local server that ignores keys)"
            )
        try:
            import openai  # lazy: only the judge needs the SDK
        except ImportError as exc:
            raise GraderError(
                "judge grader: the 'openai' package is not installed; pip install openai "
                "(or sealbench[full])"
            ) from exc
        self._openai = openai
        self._client = openai.OpenAI(
            api_key=api_key, base_url=self.base_url, timeout=self.timeout, max_retries=0
        )

    def _where(self) -> str:
        return self.base_url or "the OpenAI API (api.openai.com)"

    def ask(self, question: str, gold: str, prediction: str) -> bool | None:
        """One judge call; returns the parsed verdict (``None`` if the reply was neither)."""
        content = self.prompt.format(question=question, gold=gold, prediction=(prediction or "").strip())
        oa = self._openai
        retryable = (oa.APIConnectionError, oa.RateLimitError, oa.InternalServerError)
        last: Exception | None = None
        for attempt in range(self.max_retries + 1):
            if attempt:
                time.sleep(0.25 * attempt)
            try:
                self.stats["requests"] += 1
                extra = {"max_tokens": self.max_tokens} if self.max_tokens else {}
                resp = self._client.chat.completions.create(
                    model=self.model,
                    messages=[{"role": "user", "content": content}],
                    temperature=0,
                    **extra,
                )
            except retryable as exc:
                last = exc
                continue
            except oa.AuthenticationError as exc:
                raise GraderError(
                    f"judge grader: {self._where()} rejected the API key (HTTP 401); check "
                    "SEALBENCH_JUDGE_API_KEY / OPENAI_API_KEY"
                ) from exc
            except oa.NotFoundError as exc:
                raise GraderError(
                    f"judge grader: {self._where()} returned 404 for model {self.model!r}; check "
                    "SEALBENCH_JUDGE_MODEL and that the base URL ends in /v1"
                ) from exc
            except oa.APIStatusError as exc:
                raise GraderError(
                    f"judge grader: {self._where()} answered HTTP {exc.status_code} for model "
                    f"{self.model!r}: {str(exc).splitlines()[0][:200]}"
                ) from exc
            try:
                text = resp.choices[0].message.content
            except (AttributeError, IndexError, TypeError) as exc:
                raise GraderError(
                    f"judge grader: {self._where()} returned a reply that is not an OpenAI chat "
                    "completion; check SEALBENCH_JUDGE_BASE_URL"
                ) from exc
            return parse_yes_no(text)
        tries = self.max_retries + 1
        if isinstance(last, oa.APIStatusError):  # rate limit / server error on every try
            raise GraderError(
                f"judge grader: {self._where()} answered HTTP {last.status_code} on all {tries} "
                "tries; wait and retry, or point SEALBENCH_JUDGE_BASE_URL at a healthy server"
            ) from last
        kind = "timed out" if isinstance(last, oa.APITimeoutError) else "connection failed"
        raise GraderError(
            f"judge grader: cannot reach {self._where()} ({kind}, {tries} tries); check "
            "SEALBENCH_JUDGE_BASE_URL / OPENAI_BASE_URL and that the server is up"
        ) from last

    def grade(self, question: str, golds: str | Sequence[str], prediction: str) -> bool:
        # SEAL asks about one gold answer; with several (SQuAD dev), any accepted gold counts.
        seen = set()
        for gold in _as_golds(golds):
            norm = normalize_answer(gold)
            if norm in seen:
                continue
            seen.add(norm)
            key = (question, gold, prediction)
            if key in self._cache:
                self.stats["cached"] += 1
                verdict = self._cache[key]
            else:
                parsed = self.ask(question, gold, prediction)
                if parsed is None:
                    self.stats["unparsed"] += 1
                verdict = bool(parsed)
                self._cache[key] = verdict
            if verdict:
                return True
        return False


# --------------------------------------------------------------------------------------------
# Registry
# --------------------------------------------------------------------------------------------

GRADERS: dict[str, Callable[..., Grader]] = {
    "match": MatchGrader,
    "em": ExactMatchGrader,
    "f1": F1Grader,
    "judge": JudgeGrader,
}
DEFAULT_GRADER = "match"


def get_grader(name: str | Grader | None = None, **options) -> Grader:
    """Build a grader by registry name (default ``match``); a Grader instance is returned as is."""
    if isinstance(name, Grader):
        return name
    name = name or DEFAULT_GRADER
    try:
        factory = GRADERS[name]
    except KeyError:
        raise GraderError(
            f"unknown grader {name!r}; choose one of: {', '.join(sorted(GRADERS))}"
        ) from None
    try:
        return factory(**options)
    except TypeError as exc:
        raise GraderError(f"grader {name!r}: bad options {sorted(options)}: {exc}") from exc


# --------------------------------------------------------------------------------------------
# Calibration against GPT-4.1 verdicts
# --------------------------------------------------------------------------------------------

CALIBRATION_SUBDIR = Path("reference") / "judge_calibration"


def load_calibration_rows(data_dir: str | os.PathLike | None = None) -> list[dict]:
    """Rows of ``<data_dir>/reference/judge_calibration/*.jsonl`` (files in name order).

    ``data_dir`` defaults to ``$SEALBENCH_DATA_DIR``; it may also point straight at the
    ``judge_calibration`` folder. Each row has source, title, question, gold, prediction,
    gpt41_correct."""
    if data_dir is None:
        data_dir = os.environ.get("SEALBENCH_DATA_DIR")
        if not data_dir:
            raise FileNotFoundError(
                "no data directory: pass data_dir or set SEALBENCH_DATA_DIR (e.g. ../shared/data)"
            )
    root = Path(data_dir)
    folder = root / CALIBRATION_SUBDIR
    if not folder.is_dir():
        folder = root
    files = sorted(folder.glob("*.jsonl"))
    if not files:
        raise FileNotFoundError(
            f"no judge calibration files (*.jsonl) under {root / CALIBRATION_SUBDIR}; "
            "set SEALBENCH_DATA_DIR to the shared data folder"
        )
    rows: list[dict] = []
    for f in files:
        with open(f, encoding="utf-8") as fh:
            for line in fh:
                line = line.strip()
                if line:
                    row = json.loads(line)
                    row.setdefault("source", f.stem)
                    rows.append(row)
    return rows


def _metrics(verdicts: Sequence[bool], reference: Sequence[bool]) -> dict:
    n = len(verdicts)
    tp = sum(1 for v, r in zip(verdicts, reference) if v and r)
    fp = sum(1 for v, r in zip(verdicts, reference) if v and not r)
    fn = sum(1 for v, r in zip(verdicts, reference) if not v and r)
    tn = n - tp - fp - fn
    grader_acc = (tp + fp) / n if n else 0.0
    ref_acc = (tp + fn) / n if n else 0.0
    return {
        "n": n,
        "agreement": (tp + tn) / n if n else 0.0,
        "grader_accuracy": grader_acc,
        "reference_accuracy": ref_acc,
        "bias": grader_acc - ref_acc,
        # positive = "judged correct"; "true" = what GPT-4.1 said
        "confusion": {"tp": tp, "fp": fp, "fn": fn, "tn": tn},
    }


def calibrate(
    rows: Sequence[Mapping],
    grader: str | Grader | None = None,
    reference_key: str = "gpt41_correct",
    **options,
) -> dict:
    """Compare a grader (name or instance, default ``match``) with reference verdicts.

    Returns ``{grader, n, agreement, grader_accuracy, reference_accuracy, bias, confusion,
    by_source}``: bias = grader accuracy - reference accuracy; confusion counts tp/fp/fn/tn with
    "correct" as the positive class and the reference as truth; by_source repeats the metrics per
    row ``source`` when rows carry one."""
    g = get_grader(grader, **options)
    rows = list(rows)
    missing = [i for i, r in enumerate(rows) if reference_key not in r]
    if missing:
        raise KeyError(f"{len(missing)} rows lack the reference field {reference_key!r}")
    verdicts = g.grade_many(rows)
    reference = [bool(r[reference_key]) for r in rows]
    out = {"grader": g.name, **_metrics(verdicts, reference)}
    sources = sorted({r["source"] for r in rows if "source" in r})
    if sources:
        out["by_source"] = {
            s: _metrics(
                [v for v, r in zip(verdicts, rows) if r.get("source") == s],
                [x for x, r in zip(reference, rows) if r.get("source") == s],
            )
            for s in sources
        }
    return out
