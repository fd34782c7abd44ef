"""SQuAD passages for knowledge incorporation: loading, SEAL's evaluation set, cached notes files.

Files live in a data directory (`--data-dir`, then `$SEALBENCH_DATA_DIR`, then `../shared/data`
beside the checkout) holding `squad/squad_v1.1_dev_by_passage.json`,
`squad/squad_v1.1_train_pool100.json` and `notes/*.json`; without one, SQuAD v1.1 comes from the
Hugging Face hub through `datasets`. Every file is read as UTF-8 (a BOM is accepted) and every
malformed entry is one `DataError` line naming the file, the item and the fix.
"""
from __future__ import annotations

import hashlib
import json
import os
import random
from dataclasses import dataclass, field
from pathlib import Path

from ...inputs import DATA_WHERE, data_dir, read_text


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

    @property
    def digest(self) -> str:
        """A hash of the passage's content (title, context, questions, golds): its identity."""
        return hashlib.sha256(json.dumps(self.to_dict() | {"id": ""}, sort_keys=True).encode()).hexdigest()[:16]


# ------------------------------------------------------------------------------------ loading
DEV_FILE = "squad/squad_v1.1_dev_by_passage.json"
TRAIN_POOL_FILE = "squad/squad_v1.1_train_pool100.json"


WHERE = DATA_WHERE + " (or pip install datasets to read SQuAD from the Hugging Face hub)"


def _parse_passages(raw, source: str, split: str) -> list[Passage]:
    if not isinstance(raw, list):
        raise DataError(f"{source}: expected a JSON list of passages [{{title, context, questions}}], "
                        f"got {type(raw).__name__}")
    passages = []
    for i, item in enumerate(raw):
        if not isinstance(item, dict) or not {"title", "context", "questions"} <= set(item) \
                or not isinstance(item.get("context"), str) or not isinstance(item.get("title"), str):
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
            answers = [answers] if isinstance(answers, str) else answers
            if isinstance(answers, (int, float)) and not isinstance(answers, bool):
                answers = [str(answers)]
            if not isinstance(answers, (list, tuple)) or not all(isinstance(a, (str, int, float)) for a in answers):
                raise DataError(f"{source}: passage {i} ({item['title']!r}) question {j}: the gold answer "
                                f"must be text or a list of texts, got {answers!r:.60}")
            answers = list(dict.fromkeys(str(a) for a in answers if str(a).strip()))  # dedupe, keep order
            if not answers:
                raise DataError(f"{source}: passage {i} ({item['title']!r}) question {j} has no gold answer")
            questions.append(Question(q["question"], answers))
        passages.append(Passage(f"{split}:{i}", item["title"], item["context"], questions))
    return passages


def read_json(path: Path, what: str = "data file"):
    """A JSON file read as UTF-8 (BOM accepted); every failure is one DataError line."""
    text = read_text(path, what, DataError, WHERE)
    try:
        return json.loads(text)
    except json.JSONDecodeError as err:
        raise DataError(f"{path} is not valid JSON ({err.msg} at line {err.lineno}); fix or re-download it") from None


def _from_hub(split: str) -> list[dict]:
    """Public SQuAD v1.1 via `datasets`, grouped by passage in first-seen order (SEAL's grouping)."""
    try:
        import datasets
    except ImportError:
        raise DataError(f"no SQuAD data found: {WHERE}") from None
    try:
        ds = datasets.load_dataset("rajpurkar/squad", split=split)
    except Exception as err:  # offline, no cache, hub error: all mean the same thing to the user
        raise DataError(f"could not load SQuAD v1.1 from the Hugging Face hub ({type(err).__name__}): "
                        f"{WHERE}; or run once with network access to fill the datasets cache") from None
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
        passages = _parse_passages(read_json(path), str(path), split)
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
    raw = read_json(path)
    if not isinstance(raw, list):
        raise DataError(f"{path}: expected a list of {{title, context, completions}}")
    notes = {}
    for i, item in enumerate(raw):
        if not isinstance(item, dict) or "context" not in item or "completions" not in item:
            raise DataError(f"{path}: entry {i} needs 'context' and 'completions' (a list of note texts)")
        comps = item["completions"]
        if isinstance(comps, str):
            comps = [comps]
        if not isinstance(comps, list) or not all(isinstance(c, str) for c in comps):
            raise DataError(f"{path}: entry {i}: 'completions' must be a list of texts, got {comps!r:.60}")
        notes[item["context"]] = comps
    return notes
