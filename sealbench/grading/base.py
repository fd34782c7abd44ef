"""What every grader shares: the :class:`Verdict` it returns, the :class:`Grader` interface, the
:class:`GraderError` it raises, and the checks that turn golds and predictions into text.

Kept apart from ``__init__`` (the registry) so that the grader modules can import it without a
circular import.
"""
from __future__ import annotations

import numbers
from dataclasses import dataclass
from typing import Iterable, Mapping, Sequence


class GraderError(RuntimeError):
    """A grader cannot work as configured or was given bad input; the message (one line) says
    what to set or fix."""


@dataclass(frozen=True)
class Verdict:
    """One grading decision: ``correct`` and the ``reason`` (which rule decided, or the judge's
    reply). ``bool(verdict)`` is ``verdict.correct``, so ``bool(grader.grade(...))`` and
    ``if grader.grade(...)`` read as before; ``sum(verdicts)`` counts the correct ones."""

    correct: bool
    reason: str = ""

    def __bool__(self) -> bool:
        return self.correct

    def __radd__(self, other):  # sum([...]) starts from 0
        return other + int(self.correct)

    def __add__(self, other):
        return int(self.correct) + other


def as_text(value, what: str = "prediction") -> str:
    """``value`` as text: strings as they are, numbers (not booleans) as their text (``42`` ->
    "42", ``2.0`` -> "2", ``0.5`` -> "0.5"); anything else raises a one-line
    :class:`GraderError`."""
    if isinstance(value, str):
        return value
    if isinstance(value, numbers.Real) and not isinstance(value, bool):
        if isinstance(value, numbers.Integral):
            return str(int(value))
        x = float(value)
        return str(int(x)) if x.is_integer() else repr(x)
    shown = repr(value)
    shown = shown if len(shown) <= 60 else shown[:57] + "..."
    raise GraderError(f"{what} must be a string or a number, not {type(value).__name__}: {shown}")


def as_golds(golds) -> list[str]:
    """The gold answers as a list of texts: one string or number, or an iterable of them."""
    if isinstance(golds, (str, numbers.Real)) and not isinstance(golds, bool):
        return [as_text(golds, "gold answer")]
    if golds is None or isinstance(golds, (bool, Mapping)) or not isinstance(golds, Iterable):
        as_text(golds, "gold answers")  # raises with the one-line message
    return [as_text(g, "gold answer") for g in golds]


def row_fields(row: Mapping) -> tuple[str, object, object]:
    """``(question, golds, prediction)`` of a dict row; a missing or ``None`` prediction is ""."""
    if "gold" in row:
        gold = row["gold"]
    elif "golds" in row:
        gold = row["golds"]
    else:
        raise KeyError("grading row needs a 'gold' (or 'golds') field")
    prediction = row.get("prediction")
    return row.get("question", "") or "", gold, "" if prediction is None else prediction


class Grader:
    """A grader says whether ``prediction`` answers ``question`` correctly given the gold answer(s).

    Subclasses implement :meth:`grade_texts` on checked text; :meth:`grade` does the checks
    (numbers become text, anything else that is not a string raises :class:`GraderError`)."""

    name = "base"
    #: Stop sequences calibration cuts predictions at before this grader sees them (see
    #: :func:`~sealbench.grading.calibration.grade_rows`); empty: graded whole.
    answer_stops: tuple[str, ...] = ()

    def grade(self, question: str, golds: str | Sequence[str], prediction: str) -> Verdict:
        return self.grade_texts(as_text(question or "", "question"), as_golds(golds),
                                as_text(prediction))

    def grade_texts(self, question: str, golds: list[str], prediction: str) -> Verdict:
        raise NotImplementedError

    def grade_many(self, rows: Iterable[Mapping]) -> list[Verdict]:
        """Grade dict rows with keys ``question``, ``gold`` (str or list; ``golds`` also accepted)
        and ``prediction``."""
        return [self.grade(*row_fields(r)) for r in rows]

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.name!r}>"
