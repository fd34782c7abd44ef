"""Grading SQuAD-style answers: official EM/F1, a deterministic ``match`` grader, and an LLM judge.

SEAL grades free-form model answers with GPT-4.1 and a yes/no instruction ("does the student
answer convey the gold answer? extra detail is fine, contradictions are not"). This package offers

* a grader registry (:data:`GRADERS`, :func:`get_grader`, this module) with four graders, each
  returning a :class:`Verdict` (``correct`` and the ``reason``; ``bool(verdict)`` is ``correct``):

  - ``match`` (default, :mod:`.match`): deterministic, offline, stdlib-only rules tuned to agree
    with GPT-4.1's verdicts on SEAL's released evaluation answers (``docs/grading.md``);
  - ``em`` / ``f1`` (:mod:`.metrics`): official SQuAD exact match against any gold / token F1
    >= 0.5 against the best gold;
  - ``judge`` (:mod:`.judge`): SEAL's yes/no LLM judge through any OpenAI-compatible endpoint;

* :mod:`.metrics`: :func:`normalize_answer`, :func:`exact_match`, :func:`f1_score` (SQuAD v1.1);
* :mod:`.answers`: :func:`cut_answer` and :data:`ANSWER_STOPS` (cut generated answers before
  grading), :func:`answer_region` (``match``'s own cut);
* :mod:`.calibration`: :func:`calibrate`, :func:`calibrate_held_out`, :func:`load_calibration_rows`
  (measure any grader against the GPT-4.1 verdicts), :func:`load_embedded_calibration_rows` and
  :func:`calibrate_by_passage` (against a judge's verdicts on the embedded model's answers, held
  out by passage, per contender);
* :mod:`.base`: :class:`Grader`, :class:`Verdict`, :class:`GraderError`.

Golds and predictions may be strings or numbers (``42`` is graded as "42"); a prediction of any
other type raises :class:`GraderError`. Only the standard library is imported; the ``openai`` SDK
is imported lazily by the judge.
"""
from __future__ import annotations

from typing import Callable

from .answers import ANSWER_STOPS, answer_region, cut_answer
from .base import Grader, GraderError, Verdict
from .calibration import (
    agreement_metrics,
    calibrate,
    calibrate_by_passage,
    calibrate_held_out,
    grade_rows,
    load_calibration_rows,
    load_embedded_calibration_rows,
    markdown_table,
    passage_folds,
    question_folds,
)
from .judge import JUDGE_PROMPT, JudgeGrader, parse_yes_no
from .match import MatchGrader
from .metrics import ExactMatchGrader, F1Grader, exact_match, f1_score, normalize_answer

__all__ = [
    "GraderError",
    "Verdict",
    "Grader",
    "normalize_answer",
    "exact_match",
    "f1_score",
    "MatchGrader",
    "ExactMatchGrader",
    "F1Grader",
    "JudgeGrader",
    "GRADERS",
    "DEFAULT_GRADER",
    "get_grader",
    "parse_yes_no",
    "JUDGE_PROMPT",
    "cut_answer",
    "ANSWER_STOPS",
    "answer_region",
    "agreement_metrics",
    "calibrate",
    "calibrate_held_out",
    "calibrate_by_passage",
    "grade_rows",
    "load_calibration_rows",
    "load_embedded_calibration_rows",
    "markdown_table",
    "passage_folds",
    "question_folds",
]

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
