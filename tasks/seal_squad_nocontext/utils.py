"""Helpers for the lm-eval tasks `seal_squad_nocontext` and `seal_squad_incontext`.

Docs are built offline from sealbench's data (SEAL's 200 evaluation passages of SQuAD v1.1 dev,
docs/design.md §1a): one doc per question, each carrying its passage (id, title, context) so a model
type can adapt per passage. lm-eval imports this file by path, so sealbench is imported from the
repository this file lives in when it is not installed.

Options (see docs/lm_eval.md):
  * number of passages: ``--metadata '{"n_passages": 5}'`` > $SEALBENCH_N_PASSAGES > 200
  * data dir: ``--metadata '{"data_dir": "..."}'`` > $SEALBENCH_DATA_DIR > <repo>/../shared/data
    (if it exists) > the public SQuAD on the Hugging Face hub (needs network or a datasets cache)
  * grader behind the ``match`` metric: $SEALBENCH_GRADER (default: sealbench's default grader)
"""
from __future__ import annotations

import os
import sys
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[2]
try:
    import sealbench  # noqa: F401
except ImportError:  # running from a checkout without `pip install -e .`
    sys.path.insert(0, str(REPO_ROOT))

from sealbench.inputs import data_dir as _data_dir  # noqa: E402
from sealbench.families.squad.data import seal_eval_passages  # noqa: E402
from sealbench.families.squad.prompts import ANSWER_PROMPT, IN_CONTEXT_PROMPT  # noqa: E402

DEFAULT_N_PASSAGES = 200


def resolve_data_dir(explicit: str | os.PathLike | None = None) -> Path | None:
    """The data dir as every sealbench command finds it: explicit value, $SEALBENCH_DATA_DIR,
    <repo>/../shared/data when it exists, else None (then the hub)."""
    return _data_dir(explicit)


def resolve_n_passages(value=None) -> int:
    raw = value if value not in (None, "") else os.environ.get("SEALBENCH_N_PASSAGES", DEFAULT_N_PASSAGES)
    try:
        n = int(raw)
    except (TypeError, ValueError):
        raise ValueError(f"n_passages must be an integer between 1 and 2067, got {raw!r} "
                         "(from --metadata n_passages or $SEALBENCH_N_PASSAGES)") from None
    if n < 1:
        raise ValueError(f"n_passages must be at least 1, got {n}")
    return n


def build_docs(n_passages: int | None = None, data_dir: str | os.PathLike | None = None) -> list[dict]:
    """One dict per question of SEAL's first `n_passages` evaluation passages, in SEAL's order."""
    passages = seal_eval_passages(resolve_n_passages(n_passages), resolve_data_dir(data_dir))
    docs = []
    for rank, p in enumerate(passages):
        for qi, q in enumerate(p.questions):
            docs.append({
                "passage_id": p.id,        # stable "<split>:<index in source file>"
                "passage_index": rank,     # position among SEAL's evaluation passages
                "title": p.title,
                "context": p.context,
                "question_index": qi,
                "question": q.question,
                "answers": list(q.answers),
            })
    return docs


def load_dataset(n_passages=None, data_dir=None, **_ignored):
    """lm-eval `custom_dataset` hook: called with the task's metadata (task YAML `metadata`, the
    `--metadata` JSON and, from lm-eval, the model_args) plus `dataset_kwargs`; unknown keys are
    ignored."""
    import datasets

    docs = build_docs(n_passages, data_dir)
    features = datasets.Features({
        "passage_id": datasets.Value("string"),
        "passage_index": datasets.Value("int32"),
        "title": datasets.Value("string"),
        "context": datasets.Value("string"),
        "question_index": datasets.Value("int32"),
        "question": datasets.Value("string"),
        "answers": datasets.Sequence(datasets.Value("string")),
    })
    return {"test": datasets.Dataset.from_list(docs, features=features)}


# ------------------------------------------------------------------------------------ prompts
def doc_to_text_nocontext(doc: dict) -> str:
    return ANSWER_PROMPT.format(title=doc["title"], question=doc["question"])


def doc_to_text_incontext(doc: dict) -> str:
    return IN_CONTEXT_PROMPT.format(title=doc["title"], context=doc["context"],
                                              question=doc["question"])


def doc_to_target(doc: dict) -> str:
    return doc["answers"][0]


# ------------------------------------------------------------------------------------ scoring
_GRADER = None


def _grader():
    global _GRADER
    if _GRADER is None:
        from sealbench.grading import get_grader
        _GRADER = get_grader(os.environ.get("SEALBENCH_GRADER") or None)
    return _GRADER


def score(doc: dict, prediction: str) -> dict:
    from sealbench.grading import exact_match, f1_score

    golds = list(doc["answers"])
    correct = float(bool(_grader().grade(doc["question"], golds, prediction)))
    return {
        "match": correct,
        "match_passage_mean": (doc["passage_id"], correct),
        "exact_match": float(exact_match(prediction, golds)),
        "f1": float(f1_score(prediction, golds)),
    }


def process_results(doc: dict, results: list) -> dict:
    """Scores the answer cut at SEAL's answer stops (as `sealbench run` grades it)."""
    from sealbench.grading import cut_answer

    return score(doc, cut_answer(results[0]) if results else "")


def passage_mean(items) -> float:
    """SEAL's headline accuracy: mean over passages of each passage's accuracy."""
    per_passage: dict[str, list[float]] = {}
    for pid, value in items:
        per_passage.setdefault(pid, []).append(float(value))
    if not per_passage:
        return float("nan")
    return sum(sum(v) / len(v) for v in per_passage.values()) / len(per_passage)
