"""SEAL's knowledge prompts and the rule that turns a self-edit into training sequences (SEAL §3.1,
docs/design.md §1a): the closed-book answer prompt, the open-book one, the self-edit prompts (SEAL's main
"implications" and its appendix variants), and `training_texts`.
"""
from __future__ import annotations

import re

from .data import Passage, Question

ANSWER_PROMPT = "Let's answer a question directly and concisely.\nQuestion: Topic: {title}\n{question}\nAnswer:\n"
IN_CONTEXT_PROMPT = ("Let's answer a question directly and concisely.\nPassage:\n{title}\n{context}\n\n"
                     "Question: Topic: {title}\n{question}\nAnswer:\n")

# Self-edit prompts (SEAL's main prompt and the appendix variants).
SELF_EDIT_PROMPTS = {
    "implications": ("Let's read the following passage and produce a list of implications derived directly "
                     "or indirectly from the content.\n\nPassage:\n{title}\n{context}\n\nImplications:\n"),
    "implications-long": ("Let's read the following passage and produce a long list of implications derived "
                          "directly or indirectly from the content. Be thorough: cover every fact, name, "
                          "number and date, and restate each in several ways.\n\nPassage:\n{title}\n{context}"
                          "\n\nImplications:\n"),
    "rewrite": ("Let's read the following passage and rewrite it in a few different ways, each one "
                "separated by a newline.\n\nPassage:\n{title}\n{context}\n\nRewritten passages:\n"),
    "self-qa": ("Let's read the following passage and rewrite it in a question-answer format.\n\n"
                "Passage:\n{title}\n{context}\n\nQuestion 1: "),
}


def answer_prompt(passage: Passage, question: Question, with_context: bool = False) -> str:
    template = IN_CONTEXT_PROMPT if with_context else ANSWER_PROMPT
    return template.format(title=passage.title, context=passage.context, question=question.question)


def self_edit_prompt(passage: Passage, kind: str = "implications") -> str:
    if kind not in SELF_EDIT_PROMPTS:
        raise ValueError(f"unknown self-edit prompt {kind!r}; choose from {', '.join(SELF_EDIT_PROMPTS)}")
    return SELF_EDIT_PROMPTS[kind].format(title=passage.title, context=passage.context)


_SURE_LINE = re.compile(r"^(sure|here|certainly|okay|ok)\b.*", re.IGNORECASE)
_QA_SPLIT = re.compile(r"(?=^Question \d+:)", re.MULTILINE)


def split_self_edit(completion: str, kind: str = "implications") -> list[str]:
    """Split one self-edit into training statements, following SEAL's rules.

    Split on `---` then into non-empty lines; drop a leading chatty line ("Sure, here is a list…")
    when the next line starts the list with "1."; self-QA text splits per "Question N:" instead.
    """
    if kind == "self-qa":
        text = "Question 1: " + completion if not completion.lstrip().startswith("Question") else completion
        return [c.strip() for c in _QA_SPLIT.split(text) if c.strip()]
    lines: list[str] = []
    for chunk in completion.split("---"):
        chunk_lines = [ln.strip() for ln in chunk.splitlines() if ln.strip()]
        if len(chunk_lines) >= 2 and _SURE_LINE.match(chunk_lines[0]) and chunk_lines[1].startswith("1."):
            chunk_lines = chunk_lines[1:]
        lines.extend(chunk_lines)
    return lines


def training_texts(passage: Passage, self_edits: list[str], kind: str = "implications",
                   include_passage: bool = True) -> list[str]:
    """Training sequences for one edit: each statement prefixed by the title, plus the raw passage."""
    texts = []
    for edit in self_edits:
        texts.extend(f"{passage.title}\n{line}" for line in split_self_edit(edit, kind))
    if include_passage:
        texts.append(f"{passage.title}\n{passage.context}")
    return texts
