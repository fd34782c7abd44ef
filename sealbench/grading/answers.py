"""Cutting generated answers down to the answer.

Greedy decoding runs to ``max_new_tokens`` unless something stops it, and small base models rarely
stop on their own: after ``1979`` they go on with a blank line and the next few-shot block
(``1979\\n\\nQuestion: Topic: ...``). Graded whole, such an answer fails exact match and F1 (and
may contain the gold by accident), so answers are cut before they are graded:

* :func:`cut_answer` with :data:`ANSWER_STOPS` cuts at fixed stop sequences (what a generation
  call's stop strings would have done);
* :func:`answer_region` is the ``match`` grader's own, wider cut: it also drops a new ``Q:`` /
  ``Passage:`` block or an echoed system prompt that starts on a new line.
"""
from __future__ import annotations

import re

from .base import as_text

#: Stop sequences for answers to SEAL's prompt
#: (``...Question: Topic: {title}\n{question}\nAnswer:\n``).
ANSWER_STOPS: tuple[str, ...] = (
    # A blank line ends the answer: after it base models start something else (the next
    # question, a passage, an explanation, a "Q:"/"A:" block of their own). The price: a list
    # introduced by "...the following:\n\n1. X" is cut after the colon (on the calibration rows
    # this changes 7 of 3,896 verdicts: match's agreement 88.66% -> 88.63%).
    "\n\n",
    # The prompt's own format: the model writes the next few-shot question on a new line.
    "\nQuestion:",
    # ...or on the same line ("1979 Question: Topic: ..."). This also covers "\nQuestion:"; both
    # are listed so that callers who pick stops one by one keep the line-start form.
    "Question:",
    # ChatML end of turn (Qwen, SmolLM2-Instruct) when the tokenizer does not stop at it or
    # special tokens are decoded into the text.
    "<|im_end|>",
    # Gemma's end of turn, for the same reason.
    "<end_of_turn>",
)


def cut_answer(raw: str, stops: tuple[str, ...] = ANSWER_STOPS) -> str:
    """``raw`` up to the earliest occurrence of any stop sequence in ``stops``, stripped of
    surrounding whitespace (empty stop strings are ignored; numbers are taken as their text)."""
    text = as_text(raw, "answer")
    cut = min((pos for pos in (text.find(s) for s in stops if s) if pos != -1), default=len(text))
    return text[:cut].strip()


# Base models often keep generating after their answer: a new few-shot "Q:"/"Question:" block, a
# passage, or an echoed system prompt. Text after such a marker is not part of the answer, and it
# can contain the gold by accident (a repeated question), so only the text before it is graded.
_CONTINUATION_RE = re.compile(
    r"\n\s*(?:Q\s*:|Question\s*:|Passage\s*:|Context\s*:|Topic\s*:|Title\s*:|You are an? )"
    r"|\n\s*\n\s*(?:A\s*:|Answer\s*:)"
)


def answer_region(prediction: str) -> str:
    """The part of a prediction that ``match`` grades: everything before a runaway continuation."""
    m = _CONTINUATION_RE.search(prediction or "")
    return prediction[: m.start()] if m else (prediction or "")
