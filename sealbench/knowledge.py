"""The knowledge-incorporation domain: SQuAD passages asked without their context.

Everything specific to SEAL's knowledge task lives here: loading passages, choosing SEAL's 200
evaluation passages, the prompts (answer and self-edit), and turning a self-edit into training
sequences. See docs/DESIGN.md §1a.
"""
from __future__ import annotations

import json
import os
import random
import re
from dataclasses import dataclass, field
from pathlib import Path


class DataError(RuntimeError):
    """Missing or malformed data; the message names the file/item and how to fix it."""


@dataclass
class Question:
    question: str
    answers: list[str]  # every gold answer SQuAD keeps; grading accepts any of them


@dataclass
class Passage:
    id: str              # stable id: "<split>:<index in source file>"
    title: str
    context: str
    questions: list[Question] = field(default_factory=list)

    def to_dict(self) -> dict:
        return {"id": self.id, "title": self.title, "context": self.context,
                "questions": [{"question": q.question, "answers": q.answers} for q in self.questions]}


# ---------------------------------------------------------------------------------------- prompts
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


# ---------------------------------------------------------------------------- self-edit -> texts
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


# ------------------------------------------------------------------------------------ loading
DEV_FILE = "squad/squad_v1.1_dev_by_passage.json"
TRAIN_POOL_FILE = "squad/squad_v1.1_train_pool100.json"


def data_dir(explicit: str | os.PathLike | None = None) -> Path | None:
    """--data-dir, else $SEALBENCH_DATA_DIR, else None (then the public loaders are tried)."""
    value = explicit or os.environ.get("SEALBENCH_DATA_DIR")
    return Path(value).expanduser() if value else None


def _parse_passages(raw, source: str, split: str) -> list[Passage]:
    if not isinstance(raw, list):
        raise DataError(f"{source}: expected a JSON list of passages [{{title, context, questions}}], "
                        f"got {type(raw).__name__}")
    passages = []
    for i, item in enumerate(raw):
        if not isinstance(item, dict) or not {"title", "context", "questions"} <= set(item):
            missing = sorted({"title", "context", "questions"} - set(item if isinstance(item, dict) else {}))
            raise DataError(f"{source}: passage {i} is missing {', '.join(missing) or 'its fields'}; "
                            "each passage needs title, context and questions")
        questions = []
        for j, q in enumerate(item["questions"] or []):
            if not isinstance(q, dict) or "question" not in q or not ({"answer", "answers"} & set(q)):
                raise DataError(f"{source}: passage {i} ({item['title']!r}) question {j} needs "
                                "'question' and 'answer' (or 'answers')")
            answers = q.get("answers", q.get("answer"))
            if isinstance(answers, dict):  # HF datasets shape {"text": [...], "answer_start": [...]}
                answers = answers.get("text", [])
            answers = [answers] if isinstance(answers, str) else list(answers)
            answers = list(dict.fromkeys(a for a in answers if a))  # dedupe, keep order
            if not answers:
                raise DataError(f"{source}: passage {i} ({item['title']!r}) question {j} has no gold answer")
            questions.append(Question(q["question"], answers))
        passages.append(Passage(f"{split}:{i}", item["title"], item["context"], questions))
    return passages


def _read_json(path: Path):
    try:
        return json.loads(path.read_text())
    except FileNotFoundError:
        raise DataError(f"data file {path} not found; point --data-dir/SEALBENCH_DATA_DIR at a folder "
                        f"holding {DEV_FILE} and {TRAIN_POOL_FILE}") from None
    except json.JSONDecodeError as err:
        raise DataError(f"{path} is not valid JSON ({err.msg} at line {err.lineno}); re-download it") from None


def _from_hub(split: str) -> list[dict]:
    """Public SQuAD v1.1 via `datasets`, grouped by passage in first-seen order (SEAL's grouping)."""
    try:
        import datasets
    except ImportError:
        raise DataError("no data directory given and the `datasets` package is missing. Either pass "
                        "--data-dir (or set SEALBENCH_DATA_DIR) to a folder with squad/*.json, or "
                        "pip install datasets to load SQuAD v1.1 from the Hugging Face hub") from None
    try:
        ds = datasets.load_dataset("rajpurkar/squad", split=split)
    except Exception as err:  # offline, no cache, hub error: all mean the same thing to the user
        raise DataError(f"could not load SQuAD v1.1 from the Hugging Face hub ({type(err).__name__}). "
                        "Pass --data-dir (or set SEALBENCH_DATA_DIR) to a folder with squad/*.json, "
                        "or run once with network access to fill the datasets cache") from None
    grouped: dict[str, dict] = {}
    for row in ds:
        key = row["context"]
        entry = grouped.setdefault(key, {"title": row["title"].replace("_", " "), "context": key, "questions": []})
        entry["questions"].append({"question": row["question"], "answers": row["answers"]["text"]})
    return list(grouped.values())


def load_passages(split: str = "dev", data: str | os.PathLike | None = None) -> list[Passage]:
    """All passages of SQuAD v1.1 dev (`dev`, 2067) or SEAL's RL pool of 100 train passages (`train`)."""
    files = {"dev": DEV_FILE, "train": TRAIN_POOL_FILE}
    if split not in files:
        raise ValueError(f"unknown split {split!r}; use dev or train")
    root = data_dir(data)
    if root is not None:
        path = root / files[split]
        passages = _parse_passages(_read_json(path), str(path), split)
    else:
        raw = _from_hub("validation" if split == "dev" else "train")
        if split == "train":
            raw = raw[:100]  # the exact SEAL pool needs the data file; this is a stand-in of equal size
        passages = _parse_passages(raw, "hub:rajpurkar/squad", split)
    return passages


def seal_eval_passages(n: int = 200, data: str | os.PathLike | None = None) -> list[Passage]:
    """SEAL's evaluation passages: dev passages shuffled with random.seed(42), the first n."""
    passages = load_passages("dev", data)
    order = list(range(len(passages)))
    random.Random(42).shuffle(order)  # same permutation as random.seed(42); random.shuffle(list)
    return [passages[i] for i in order[:n]]


def load_notes_file(path: str | os.PathLike) -> dict[str, list[str]]:
    """Cached notes: a JSON list of {title, context, completions: [str, ...]} keyed by context."""
    path = Path(path)
    raw = _read_json(path)
    if not isinstance(raw, list):
        raise DataError(f"{path}: expected a list of {{title, context, completions}}")
    notes = {}
    for i, item in enumerate(raw):
        if not isinstance(item, dict) or "context" not in item or "completions" not in item:
            raise DataError(f"{path}: entry {i} needs 'context' and 'completions'")
        comps = item["completions"]
        if isinstance(comps, str):
            comps = [comps]
        notes[item["context"]] = [str(c) for c in comps]
    return notes
