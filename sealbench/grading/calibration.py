"""Measuring a grader against GPT-4.1's verdicts on SEAL's released answers.

* :func:`load_calibration_rows` reads ``<data>/reference/judge_calibration/*.jsonl``;
* :func:`agreement_metrics` compares two verdict lists (agreement, accuracies, bias, confusion);
* :func:`grade_rows` grades dict rows with one grader;
* :func:`calibrate` grades the rows with one grader and reports those metrics, overall and per file;
* :func:`calibrate_held_out` does the same held out by question: the grader's tuned options are
  chosen on the other folds (group k-fold, :func:`question_folds`) and scored on each fold;
* :func:`load_embedded_calibration_rows` reads the judge's verdicts on the embedded model's answers
  (``<data>/reference/judge_calibration_embedded/*.jsonl``), and :func:`calibrate_by_passage`
  scores a grader on them held out by passage (:func:`passage_folds`), per contender.

Predictions are cut with :func:`~sealbench.grading.answers.cut_answer` at ``stops`` before
grading. By default (``stops=None``) each grader's own ``answer_stops`` are used:
:data:`~sealbench.grading.answers.ANSWER_STOPS` for ``em`` and ``f1`` (official metrics compare
an extracted span, so ``1979\n\nQuestion: ...`` must be cut to ``1979``), none for ``match`` (it
cuts runaway continuations itself, and cutting at a blank line would drop the list that follows
"...the following factors:\n\n") and ``judge`` (GPT-4.1 judged these answers whole).
"""
from __future__ import annotations

import json
import os
import zlib
from pathlib import Path
from typing import Mapping, Sequence

from .answers import cut_answer
from .base import Grader, row_fields

CALIBRATION_SUBDIR = Path("reference") / "judge_calibration"
EMBEDDED_CALIBRATION_SUBDIR = Path("reference") / "judge_calibration_embedded"

#: The ``match`` grader's one tuned knob and the values tried for it when held out.
MATCH_GRID: tuple[dict, ...] = tuple({"partial_threshold": t} for t in (0.4, 0.5, 0.6))


def _data_root(data_dir: str | os.PathLike | None) -> Path:
    if data_dir is None:
        data_dir = os.environ.get("SEALBENCH_DATA_DIR")
        if not data_dir:
            raise FileNotFoundError(
                "no data directory: pass data_dir or set SEALBENCH_DATA_DIR (e.g. ../shared/data)"
            )
    return Path(data_dir)


def _load_jsonl_folder(root: Path, subdir: Path) -> list[dict]:
    """Rows of ``root/subdir/*.jsonl`` (or ``root/*.jsonl`` when ``root`` is that folder), files in
    name order; each row's ``source`` defaults to its file's stem."""
    folder = root / subdir
    if not folder.is_dir():
        folder = root
    files = sorted(folder.glob("*.jsonl"))
    if not files:
        raise FileNotFoundError(
            f"no judge calibration files (*.jsonl) under {root / subdir}; "
            "set SEALBENCH_DATA_DIR to the shared data folder"
        )
    rows: list[dict] = []
    for f in files:
        with open(f, encoding="utf-8") as fh:
            for line in fh:
                line = line.strip()
                if line:
                    row = json.loads(line)
                    row.setdefault("source", f.stem)
                    rows.append(row)
    return rows


def load_calibration_rows(data_dir: str | os.PathLike | None = None) -> list[dict]:
    """Rows of ``<data_dir>/reference/judge_calibration/*.jsonl`` (files in name order).

    ``data_dir`` defaults to ``$SEALBENCH_DATA_DIR``; it may also point straight at the
    ``judge_calibration`` folder. Each row has source, title, question, gold, prediction,
    gpt41_correct."""
    return _load_jsonl_folder(_data_root(data_dir), CALIBRATION_SUBDIR)


def load_embedded_calibration_rows(data_dir: str | os.PathLike | None = None) -> list[dict]:
    """Rows of ``<data_dir>/reference/judge_calibration_embedded/*.jsonl``: a strong LLM judge's
    verdicts (SEAL's instruction) on answers of the embedded model's 200-passage run.

    ``data_dir`` as for :func:`load_calibration_rows` (or that folder itself). Each row has
    contender, passage_id, question_index, question, gold (a list), prediction, judge_correct,
    judge_reason."""
    return _load_jsonl_folder(_data_root(data_dir), EMBEDDED_CALIBRATION_SUBDIR)


def agreement_metrics(verdicts: Sequence, reference: Sequence) -> dict:
    """Agreement of ``verdicts`` with ``reference`` (both truthy = "correct"): n, agreement,
    grader_accuracy, reference_accuracy, bias (grader minus reference accuracy) and confusion
    (tp/fp/fn/tn with "correct" as the positive class and the reference as truth)."""
    n = len(verdicts)
    tp = sum(1 for v, r in zip(verdicts, reference) if v and r)
    fp = sum(1 for v, r in zip(verdicts, reference) if v and not r)
    fn = sum(1 for v, r in zip(verdicts, reference) if not v and r)
    tn = n - tp - fp - fn
    grader_acc = (tp + fp) / n if n else 0.0
    ref_acc = (tp + fn) / n if n else 0.0
    return {
        "n": n,
        "agreement": (tp + tn) / n if n else 0.0,
        "grader_accuracy": grader_acc,
        "reference_accuracy": ref_acc,
        "bias": grader_acc - ref_acc,
        "confusion": {"tp": tp, "fp": fp, "fn": fn, "tn": tn},
    }


def _reference(rows: Sequence[Mapping], reference_key: str) -> list[bool]:
    missing = sum(1 for r in rows if reference_key not in r)
    if missing:
        raise KeyError(f"{missing} rows lack the reference field {reference_key!r}")
    return [bool(r[reference_key]) for r in rows]


def grade_rows(grader: Grader, rows: Sequence[Mapping],
               stops: tuple[str, ...] | None = None) -> list:
    """``grader``'s :class:`~sealbench.grading.base.Verdict` for each dict row (``question``,
    ``gold`` or ``golds``, ``prediction``), predictions cut at ``stops`` first (``None``: the
    grader's ``answer_stops``; ``()``: graded whole)."""
    stops = grader.answer_stops if stops is None else stops
    out = []
    for row in rows:
        question, golds, prediction = row_fields(row)
        if stops:
            prediction = cut_answer(prediction, stops)
        out.append(grader.grade(question, golds, prediction))
    return out


def _breakdown(rows: Sequence[Mapping], verdicts: Sequence, reference: Sequence[bool],
               field: str) -> dict:
    """:func:`agreement_metrics` per value of the rows' ``field`` (sorted)."""
    values = sorted({r[field] for r in rows if field in r})
    return {
        x: agreement_metrics(
            [v for v, r in zip(verdicts, rows) if r.get(field) == x],
            [y for y, r in zip(reference, rows) if r.get(field) == x],
        )
        for x in values
    }


def _report(name: str, rows: Sequence[Mapping], verdicts: Sequence,
            reference: Sequence[bool], by: str | None = None) -> dict:
    out = {"grader": name, **agreement_metrics(verdicts, reference)}
    if any("source" in r for r in rows):
        out["by_source"] = _breakdown(rows, verdicts, reference, "source")
    if by:
        out[f"by_{by}"] = _breakdown(rows, verdicts, reference, by)
    return out


def calibrate(
    rows: Sequence[Mapping],
    grader: str | Grader | None = None,
    reference_key: str = "gpt41_correct",
    stops: tuple[str, ...] | None = None,
    **options,
) -> dict:
    """Compare a grader (name or instance, default ``match``) with reference verdicts.

    Returns ``{grader, n, agreement, grader_accuracy, reference_accuracy, bias, confusion,
    by_source}`` (see :func:`agreement_metrics`); by_source repeats the metrics per row ``source``
    when rows carry one. ``stops``: where predictions are cut first (``None``: the grader's own
    ``answer_stops``, see the module docstring). :func:`grade_rows` gives the verdicts themselves,
    with their reasons."""
    from . import get_grader  # the registry imports this module

    g = get_grader(grader, **options)
    rows = list(rows)
    reference = _reference(rows, reference_key)
    return _report(g.name, rows, grade_rows(g, rows, stops), reference)


def question_folds(rows: Sequence[Mapping], k: int = 5) -> list[int]:
    """Deterministic group k-fold: whole questions (title + question) go to one fold (CRC32
    mod k)."""
    return [zlib.crc32((r.get("title", "") + "\x00" + r["question"]).encode()) % k for r in rows]


def passage_folds(rows: Sequence[Mapping], k: int = 5, key: str = "passage_id") -> list[int]:
    """Deterministic group k-fold by passage: every row of a passage (``key``) goes to the same
    fold. Passages are ordered by the CRC32 of their id and dealt to the folds in turn, so fold
    sizes differ by at most one passage."""
    ids = sorted({str(r[key]) for r in rows}, key=lambda x: (zlib.crc32(x.encode()), x))
    fold = {x: i % k for i, x in enumerate(ids)}
    return [fold[str(r[key])] for r in rows]


def calibrate_held_out(
    rows: Sequence[Mapping],
    grader: str = "match",
    grid: Sequence[Mapping] | None = None,
    k: int = 5,
    max_bias: float = 0.02,
    reference_key: str = "gpt41_correct",
    stops: tuple[str, ...] | None = None,
    folds: Sequence[int] | None = None,
    by: str | None = None,
) -> dict:
    """:func:`calibrate` held out by question: for each of ``k`` folds, the grader's options are
    chosen from ``grid`` (default: :data:`MATCH_GRID` for ``match``, no options otherwise) on the
    other folds (best agreement among settings with |bias| <= ``max_bias``) and the fold is graded
    with them. Returns :func:`calibrate`'s report plus ``chosen`` (the options picked per fold)
    and ``verdicts`` (the held-out verdicts, in row order). ``folds`` (a fold number per row,
    0..k-1) replaces :func:`question_folds`; ``by`` adds ``by_<by>``: the metrics per value of
    that row field."""
    from . import get_grader

    rows = list(rows)
    reference = _reference(rows, reference_key)
    grid = list(grid if grid is not None else (MATCH_GRID if grader == "match" else ({},)))
    graders = [get_grader(grader, **opts) for opts in grid]
    graded = [grade_rows(g, rows, stops) for g in graders]
    folds = list(folds) if folds is not None else question_folds(rows, k)
    if len(folds) != len(rows):
        raise ValueError(f"{len(folds)} fold numbers for {len(rows)} rows")
    verdicts: list = [None] * len(rows)
    chosen = []
    for f in range(k):
        train = [i for i in range(len(rows)) if folds[i] != f]

        def score(j: int) -> tuple[bool, float]:
            m = agreement_metrics([graded[j][i] for i in train], [reference[i] for i in train])
            return abs(m["bias"]) <= max_bias, m["agreement"]

        best = max(range(len(grid)), key=score)
        chosen.append(dict(grid[best]))
        for i in range(len(rows)):
            if folds[i] == f:
                verdicts[i] = graded[best][i]
    return {**_report(graders[0].name, rows, verdicts, reference, by), "chosen": chosen,
            "verdicts": verdicts}


def calibrate_by_passage(
    rows: Sequence[Mapping],
    grader: str = "match",
    grid: Sequence[Mapping] | None = None,
    k: int = 5,
    max_bias: float = 0.02,
    reference_key: str = "judge_correct",
    by: str = "contender",
) -> dict:
    """:func:`calibrate_held_out` on :func:`load_embedded_calibration_rows` rows, ``k``-fold
    grouped by passage (:func:`passage_folds`): every question of a passage is held out together,
    as the contenders' answers to one passage share its words. Returns the report with
    ``by_contender`` (agreement, bias, n, confusion per contender) and ``chosen`` per fold."""
    rows = list(rows)
    return calibrate_held_out(rows, grader, grid=grid, k=k, max_bias=max_bias,
                              reference_key=reference_key, folds=passage_folds(rows, k), by=by)


def markdown_table(report: Mapping, by: str = "contender", reference: str = "judge") -> str:
    """A report's metrics per ``by`` value (``by_<by>``) and overall as a Markdown table:
    ``| <by> | n | agreement | grader acc. | <reference> acc. | bias | tp/fp/fn/tn |``, percentages
    to one decimal. ``docs/grading.md`` holds these tables and the tests regenerate them."""
    def row(name: str, m: Mapping) -> str:
        c = m["confusion"]
        return (f"| {name} | {m['n']} | {100 * m['agreement']:.1f}% | "
                f"{100 * m['grader_accuracy']:.1f}% | {100 * m['reference_accuracy']:.1f}% | "
                f"{100 * m['bias']:+.1f} pp | {c['tp']}/{c['fp']}/{c['fn']}/{c['tn']} |")

    lines = [f"| {by} | n | agreement | grader acc. | {reference} acc. | bias | tp/fp/fn/tn |",
             "|---|---|---|---|---|---|---|"]
    lines += [row(name, m) for name, m in report[f"by_{by}"].items()]
    lines.append(row("all", report))
    return "\n".join(lines)
