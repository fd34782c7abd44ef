"""The official SQuAD v1.1 metrics (normalisation, exact match, token F1) and the ``em`` / ``f1``
graders built on them."""
from __future__ import annotations

import re
import string
from collections import Counter
from typing import Iterable

from .answers import ANSWER_STOPS
from .base import Grader, Verdict, as_golds, as_text

_ARTICLES_RE = re.compile(r"\b(a|an|the)\b")
_PUNCT = frozenset(string.punctuation)


def normalize_answer(s: str) -> str:
    """SQuAD v1.1 normalisation: lower case, drop punctuation and articles, squeeze whitespace."""
    s = as_text(s, "answer").lower()
    s = "".join(ch for ch in s if ch not in _PUNCT)
    s = _ARTICLES_RE.sub(" ", s)
    return " ".join(s.split())


def _prediction_text(prediction) -> str:
    return "" if prediction is None else as_text(prediction)


def exact_match(prediction: str, golds: str | Iterable[str]) -> float:
    """1.0 if the normalised prediction equals any normalised gold, else 0.0 (numbers are
    compared as their text; ``None`` counts as an empty answer)."""
    p = normalize_answer(_prediction_text(prediction))
    return float(any(p == normalize_answer(g) for g in as_golds(golds)))


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
    p = _prediction_text(prediction)
    return max((_f1_single(p, g) for g in as_golds(golds)), default=0.0)


class ExactMatchGrader(Grader):
    """Official SQuAD exact match against any gold. Calibration cuts answers at
    :data:`~sealbench.grading.answers.ANSWER_STOPS` first (the metric compares extracted spans)."""

    name = "em"
    answer_stops = ANSWER_STOPS

    def grade_texts(self, question, golds, prediction) -> Verdict:
        if exact_match(prediction, golds) == 1.0:
            return Verdict(True, "exact match")
        return Verdict(False, "no exact match" if golds else "no gold answer")


class F1Grader(Grader):
    """Official SQuAD token F1 against the best gold, correct when >= ``threshold`` (0.5).
    Calibration cuts answers at :data:`~sealbench.grading.answers.ANSWER_STOPS` first."""

    name = "f1"
    answer_stops = ANSWER_STOPS

    def __init__(self, threshold: float = 0.5):
        self.threshold = float(threshold)

    def grade_texts(self, question, golds, prediction) -> Verdict:
        f1 = f1_score(prediction, golds)
        ok = f1 >= self.threshold
        return Verdict(ok, f"token F1 {f1:.2f} {'>=' if ok else '<'} {self.threshold:g}")
