"""The knowledge episode, written once: adapt on passages' training sequences, answer their
questions closed-book (or open-book for the ceiling), cut the answers, grade them.

The single-passage protocol (one passage), CPT (N passages in one adapter), the SEAL RL reward and
the lm-eval model type all run `iter_episodes` (or `run_episodes`, its list form): a queue of
episodes through one Engine's K slots, each answered as soon as its edit has finished, so a
contender means one procedure everywhere. `build_texts` is the only place a self-edit becomes
training sequences (SEAL's rule, prompts.py), and it validates the self-edit first.
"""
from __future__ import annotations

import time
from dataclasses import dataclass

from ...config import TrainSettings
from ...engine.generate import GenRequest
from ...engine.inner_loop import Engine, format_prompt, peak_memory_mb
from ...engine.train import EditJob
from ...grading import ANSWER_STOPS, cut_answer, exact_match, f1_score
from .data import Passage
from .prompts import answer_prompt, split_self_edit, training_texts


class EditError(ValueError):
    """A self-edit that cannot be trained on (too many statements, missing); recorded per unit."""


@dataclass
class Episode:
    key: str
    passages: list[Passage]
    texts: list[str] | None        # training sequences; None: answer with the model as it is
    seed: int
    with_context: bool = False     # the passage is in the answer prompt (open-book ceiling)
    error: str | None = None       # a problem found before training: the episode is recorded failed


@dataclass(frozen=True)
class AnswerSettings:
    style: str = "plain"           # SEAL's plain prompt, or inside the chat template
    max_tokens: int = 64
    stops: tuple[str, ...] = ANSWER_STOPS


def build_texts(passages: list[Passage], notes: list[list[str | None]], prompt_kind: str,
                include_passage: bool, max_statements: int) -> tuple[list[str], list[str]]:
    """Training sequences for one adapter over `passages`, each with its list of self-edit texts
    (empty list: train on the passage alone). Returns (texts, warnings).

    Raises EditError when a self-edit is missing or has more than `max_statements` statements."""
    texts, warnings = [], []
    for passage, edits in zip(passages, notes):
        for text in edits:
            if text is None:
                raise EditError(f"no self-edit was produced for passage {passage.id}")
            n = len(split_self_edit(text, prompt_kind))
            if n > max_statements:
                raise EditError(f"a self-edit for passage {passage.id} has {n} statements (limit "
                                f"{max_statements}); raise --max-statements or shorten the notes")
            if n == 0:
                warnings.append(f"self-edit for passage {passage.id} is empty: trained on the passage alone")
        texts += training_texts(passage, [t for t in edits if t], prompt_kind, include_passage=include_passage)
    return texts, warnings


def run_episodes(engine: Engine, episodes: list[Episode], train: TrainSettings, answer: AnswerSettings,
                 grader) -> list[dict]:
    """Every episode's result dict, in order (see `iter_episodes`)."""
    rows = {}
    for done in iter_episodes(engine, episodes, train, answer, grader):
        rows.update((id(e), row) for e, row in done)
    return [rows[id(e)] for e in episodes]


def iter_episodes(engine: Engine, episodes: list[Episode], train: TrainSettings, answer: AnswerSettings,
                  grader, flush_at: int | None = None):
    """Run a queue of episodes of any length through the engine's K slots (continuous batching,
    engine/train.py `train_queue`): yields lists of (episode, result dict) as episodes finish, the
    ones that need no training (and those failed before training) first. Each finished group is
    answered in one batched generation through its adapters before their slots are reused.

    A result dict: {key, status, error, train, n_train_sequences, questions: [{passage_id,
    question, golds, raw, prediction, correct, reason, em, f1}], accuracy, em, f1, timing}.
    Failures (bad self-edit, NaN loss) are per episode. Timing: train_s is the edit's attributed
    share of training (engine/train.py), answer_s and grade_s its share of its group's generation
    and grading by questions."""
    start = time.perf_counter()
    adapt = [e for e in episodes if e.texts is not None and e.error is None]
    first = [e for e in episodes if not (e.texts is not None and e.error is None)]
    if first:
        yield list(zip(first, _answer(engine, [(e, None, None) for e in first], answer, grader, start, len(episodes))))
    jobs = [EditJob(e.texts, train, e.seed) for e in adapt]
    for finished in engine.train_queue(jobs, flush_at=flush_at):
        group = [(adapt[j], slot, st) for j, slot, st in finished]
        yield list(zip([e for e, _, _ in group], _answer(engine, group, answer, grader, start, len(episodes))))


def answer_questions(engine: Engine, asks: list[tuple], answer: AnswerSettings,
                     grader) -> tuple[list[dict], float, float]:
    """Answer, cut, grade: every (passage, question, slot, with_context) of `asks` answered in one
    batched generation through its slot (None: the model as it is; with_context: the open-book
    prompt), each answer cut at the stops (grading/answers.py `cut_answer`) and graded. Returns one
    dict per ask, in order ({passage_id, question, golds, raw, prediction, correct, reason, em, f1}),
    the generation's seconds and the grading's. Episodes and continual sequences both answer here."""
    requests = [GenRequest(format_prompt(engine.tokenizer, answer_prompt(p, q, with_context), answer.style),
                           slot=slot, max_new_tokens=answer.max_tokens) for p, q, slot, with_context in asks]
    t = time.perf_counter()
    raws = engine.generate(requests, stop_strings=list(answer.stops)) if requests else []
    answer_s = time.perf_counter() - t
    t = time.perf_counter()
    graded = []
    for (p, q, _, _), raw in zip(asks, raws):
        pred = cut_answer(raw, answer.stops)
        verdict = grader.grade(q.question, q.answers, pred)
        graded.append({"passage_id": p.id, "question": q.question, "golds": q.answers, "raw": raw,
                       "prediction": pred, "correct": bool(verdict), "reason": verdict.reason,
                       "em": exact_match(pred, q.answers), "f1": f1_score(pred, q.answers)})
    return graded, answer_s, time.perf_counter() - t


def _answer(engine: Engine, group: list[tuple], answer: AnswerSettings, grader, start: float,
            n_episodes: int) -> list[dict]:
    """Answer and grade (episode, slot, TrainStats or None) in one batched generation; rows in order."""
    errors = {id(e): e.error or (st.error if st else None) for e, _, st in group}
    asks, owners = [], []
    for e, slot, _ in group:
        if errors[id(e)]:
            continue
        for p in e.passages:
            for q in p.questions:
                asks.append((p, q, slot, e.with_context))
                owners.append(id(e))
    answers, answer_s, grade_s = answer_questions(engine, asks, answer, grader)
    graded: dict[int, list[dict]] = {}
    for owner, a in zip(owners, answers):
        graded.setdefault(owner, []).append(a)
    n_questions = max(len(owners), 1)
    peak = round(peak_memory_mb(engine.device), 1)
    out = []
    for e, _, st in group:
        error = errors[id(e)]
        row = {"key": e.key, "status": "failed" if error else "ok", "error": error,
               "train": st.to_dict() if st else None, "n_train_sequences": len(e.texts or [])}
        qs = graded.get(id(e), [])
        share = len(qs) / n_questions
        row["timing"] = {"train_s": st.seconds if st else 0.0, "slot_s": st.slot_seconds if st else 0.0,
                         "answer_s": answer_s * share, "grade_s": grade_s * share, "batch_edits": n_episodes,
                         "peak_mem_mb": peak, "batch_s": time.perf_counter() - start}
        if row["status"] == "ok":
            if not qs:
                row.update(status="failed", error="no questions to answer for these passages")
            else:
                row["questions"] = qs
                for metric, field in (("accuracy", "correct"), ("em", "em"), ("f1", "f1")):
                    row[metric] = sum(float(q[field]) for q in qs) / len(qs)
        out.append(row)
    return out
