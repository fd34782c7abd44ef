"""The continual self-edit protocol (forgetting; docs/design.md §1a, SEAL §4.3), S sequences at once.

Per sequence of K passages: answer all K with the unedited model (row 0), then for step k = 1..K
train an adapter on passage k-1's self-edit, merge it, and answer passages 0..k-1 (row k). The
result is a (K+1) x K lower-triangular accuracy matrix (cells not evaluated are None).

SEAL merges each adapter into the weights. Here every sequence keeps its merged edits as a frozen
per-slot low-rank history (engine/lora.py `fold_into_history`: W + sum of its past B·A), which is
the same function as merged weights, so the S sequences train and answer side by side, one slot
each, in one batch per step. The base weights are never written.
"""
from __future__ import annotations

import time

from ...engine.inner_loop import Engine, peak_memory_mb
from ...engine.train import EditJob, train_edits
from ..base import derive_seed
from .episode import AnswerSettings, EditError, answer_questions, build_texts


def run_sequences(engine: Engine, units: list, notes: dict, config, grader) -> list[dict]:
    """Run up to `engine.k` continual units (one sequence each); one row per unit.

    `notes[(unit key, passage id)]` is the self-edit text (None: the edit failed) for adapting
    contenders with self-edits; contenders without train on the passage alone."""
    bank, train = engine.bank, config.train_settings()
    answer = AnswerSettings(config.answer_style, config.max_answer_tokens, config.answer_stops)
    K = config.steps
    start = time.perf_counter()
    bank.clear_history()
    rows = [{"key": u.key, "status": "ok", "error": None, "passage_ids": [p.id for p in u.items],
             "matrix": [[None] * K for _ in range(K + 1)], "steps": []} for u in units]
    try:
        _evaluate(engine, units, rows, 0, answer, grader, base=True)
        for k in range(1, K + 1):
            live = [i for i, r in enumerate(rows) if r["status"] == "ok"]
            jobs, slots = [], []
            for i in live:
                u, p = units[i], units[i].items[k - 1]
                try:
                    edits = [[notes.get((u.key, p.id))]] if u.contender.edits != "none" else [[]]
                    texts, _ = build_texts([p], edits, u.contender.prompt, u.contender.include_passage,
                                           config.max_statements)
                except EditError as err:
                    rows[i].update(status="failed", error=f"step {k}: {err}")
                    continue
                jobs.append(EditJob(texts, train, derive_seed("continual-step", u.key, k)))
                slots.append(i)
            stats = train_edits(bank, engine.tokenizer, jobs, slots=slots) if jobs else []
            for i, st in zip(slots, stats):
                if st.error:
                    rows[i].update(status="failed", error=f"step {k}: {st.error}")
                rows[i]["steps"].append({"step": k, "passage_id": units[i].items[k - 1].id,
                                         "train": {n: v for n, v in st.to_dict().items() if n != "epoch_losses"}})
            t = time.perf_counter()
            bank.fold_into_history()
            merge_s = time.perf_counter() - t
            timing = _evaluate(engine, units, rows, k, answer, grader, base=False)
            for i in slots:
                rows[i]["steps"][-1]["timing"] = {"train_s": stats[slots.index(i)].seconds, "merge_s": merge_s,
                                                  **timing, "peak_mem_mb": round(peak_memory_mb(engine.device), 1)}
    finally:
        bank.clear_history()
    for r in rows:
        r["total_s"] = (time.perf_counter() - start) / max(len(units), 1)
        r["batch_edits"] = len(units)
    return rows


def _evaluate(engine: Engine, units, rows, k: int, answer: AnswerSettings, grader, base: bool) -> dict:
    """Answer passages 0..k-1 (all K for row 0) of every live sequence through its slot."""
    asks, owners = [], []
    for i, (u, r) in enumerate(zip(units, rows)):
        if r["status"] != "ok":
            continue
        for j, p in enumerate(u.items if base else u.items[:k]):
            for q in p.questions:
                asks.append((p, q, None if base else i, False))
                owners.append((i, j))
    graded, answer_s, _ = answer_questions(engine, asks, answer, grader)
    cells: dict[tuple[int, int], list[float]] = {}
    answers: dict[int, list] = {}
    for (i, j), g in zip(owners, graded):
        cells.setdefault((i, j), []).append(float(g["correct"]))
        answers.setdefault(i, []).append([j, g["prediction"], g["correct"], g["em"], g["f1"]])
    for (i, j), verdicts in cells.items():
        rows[i]["matrix"][k][j] = sum(verdicts) / len(verdicts)
    for i, a in answers.items():
        rows[i].setdefault("answers", {})[str(k)] = a  # [passage index, prediction, correct, em, f1]
    return {"answer_s": answer_s / max(len(answers), 1)}
