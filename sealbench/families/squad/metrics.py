"""From knowledge unit rows to results-table rows (report/results.py), for every protocol.

Accuracy is SEAL's mean over passages of each passage's accuracy (a passage with k self-edits
averages them first), with a 95% bootstrap CI over passages; micro accuracy, SQuAD EM and F1 beside
it; paired differences against `base`, and `seal` against the notes it started from; timings as
medians with quartiles. CPT reports accuracy at each N; continual the forgetting matrix, the final
accuracy (CI over sequences) and forgetting.
"""
from __future__ import annotations

import math
from statistics import fmean

from ...schema import continual_rows, make_row
from ...stats import answer_words, edit_costs, mean_ci, paired_difference, timing_rows

TIMINGS = ("generate_s", "train_s", "answer_s", "grade_s")
SEAL_VERSUS = ("self-notes", "teacher-notes", "passage")


def per_passage(rows: list[dict], field: str = "correct") -> dict[str, float]:
    """passage id -> mean over the passage's edits of its question-mean of `field`."""
    by: dict[str, list[float]] = {}
    for r in rows:
        qs: dict[str, list[float]] = {}
        for q in r.get("questions", []):
            qs.setdefault(q["passage_id"], []).append(float(q[field]))
        for pid, v in qs.items():
            by.setdefault(pid, []).append(fmean(v))
    return {pid: fmean(v) for pid, v in by.items()}


def per_question(rows: list[dict], value=lambda q: float(q["correct"])) -> list[float]:
    """One value per question: the mean of `value` over the question's answers in `rows` (a
    contender with k self-edits answers each question k times, once per edit: it counts once, so
    n and the CI are over questions, as SEAL averages a passage's self-edits). A question is its
    passage id and its position among that passage's questions in a row."""
    by: dict[tuple, list[float]] = {}
    for r in rows:
        seen: dict[str, int] = {}
        for q in r.get("questions", []):
            i = seen[q["passage_id"]] = seen.get(q["passage_id"], -1) + 1
            by.setdefault((q["passage_id"], i), []).append(value(q))
    return [fmean(v) for v in by.values()]


def summarize(config, plan: list, rows: dict[str, dict], common: dict) -> list[dict]:
    """Results-table rows for a knowledge run. `rows` maps unit key -> its latest row; `common`
    holds the run-wide row fields (run_id, task, protocol, model, ...)."""
    out, seed = [], config.seed
    by_contender: dict[str, list] = {}
    for u in plan:
        by_contender.setdefault(u.contender.name, []).append(u)
    accs: dict[tuple[str, str], dict[str, float]] = {}
    for name, units in by_contender.items():
        role = units[0].contender.role
        base = {**common, "contender": name, "role": role}
        mine = [rows[u.key] for u in units if u.key in rows]
        ok = [r for r in mine if r["status"] == "ok"]
        out.append(make_row(**base, metric="failed_units", value=float(len(mine) - len(ok)), n=len(units),
                            unit="edits"))
        if config.protocol == "continual":
            out += _continual(config, base, ok)
            continue
        if config.protocol == "cpt" and units[0].contender.adapt:
            for u in units:
                r = rows.get(u.key)
                if r and r["status"] == "ok":
                    acc = per_passage([r])
                    accs[(name, f"N={u.info['n']}")] = acc
                    out += _accuracy_rows({**base, "at": f"N={u.info['n']}"}, [r], acc, seed)
        elif config.protocol == "cpt":
            acc = per_passage(ok)
            for n in config.cpt_n:
                first = {pid: acc[pid] for pid in [p.id for p in _pool(plan)[:n]] if pid in acc}
                accs[(name, f"N={n}")] = first
                out += _accuracy_rows({**base, "at": f"N={n}"}, [r for r in ok if r["passage_ids"][0] in first],
                                      first, seed)
        else:
            acc = per_passage(ok)
            accs[(name, "")] = acc
            out += _accuracy_rows(base, ok, acc, seed)
        out += _timing_rows(base, ok)
    out += _paired(accs, common, by_contender, seed)
    return out


def _pool(plan) -> list:
    seen, pool = set(), []
    for u in plan:
        for p in u.items:
            if p.id not in seen:
                seen.add(p.id)
                pool.append(p)
    return pool


def _accuracy_rows(base: dict, ok: list[dict], acc: dict[str, float], seed: int) -> list[dict]:
    if not acc:
        return []
    verdicts = per_question(ok)
    out = [make_row(**base, metric="accuracy", **_ci(mean_ci(list(acc.values()), seed)), unit="passages"),
           make_row(**base, metric="micro_accuracy", **_ci(mean_ci(verdicts, seed)), unit="questions")]
    words = per_question(ok, lambda q: answer_words([q])[0])
    if words:  # answer length: a grader's bias grows with it (docs/grading.md)
        out.append(make_row(**base, metric="answer_words", **_ci(mean_ci(words, seed)), unit="questions"))
    for metric, field in (("exact_match", "em"), ("f1", "f1")):
        out.append(make_row(**base, metric=metric, **_ci(mean_ci(list(per_passage(ok, field).values()), seed)),
                            unit="passages"))
    return out


def _timing_rows(base: dict, ok: list[dict]) -> list[dict]:
    return [make_row(**base, **fields) for fields in timing_rows(edit_costs(ok, TIMINGS, ("steps", "tokens")))]


def _paired(accs: dict, common: dict, by_contender: dict, seed: int) -> list[dict]:
    """accuracy_diff rows: every contender vs base, and seal vs the notes it started from."""
    out = []
    pairs = [(name, "base") for name in by_contender if name != "base"]
    pairs += [("seal", other) for other in SEAL_VERSUS if "seal" in by_contender and other in by_contender]
    for name, other in pairs:
        for (who, at), mine in accs.items():
            theirs = accs.get((other, at))
            if who != name or theirs is None:
                continue
            common_ids = sorted(set(mine) & set(theirs))
            if not common_ids:
                continue
            d = paired_difference([mine[p] for p in common_ids], [theirs[p] for p in common_ids], seed)
            out.append(make_row(**common, contender=name, role=by_contender[name][0].contender.role, at=at,
                                metric="accuracy_diff", vs=other, p_value=d["p_value"], **_ci(d), unit="passages"))
    return out


def _continual(config, base: dict, ok: list[dict]) -> list[dict]:
    if not ok:
        return []
    K = config.steps
    mean = [[None] * K for _ in range(K + 1)]
    std = [[None] * K for _ in range(K + 1)]
    for i in range(K + 1):
        for j in range(K):
            vals = [r["matrix"][i][j] for r in ok if r["matrix"][i][j] is not None]
            if vals:
                m = fmean(vals)
                mean[i][j], std[i][j] = m, math.sqrt(fmean([(v - m) ** 2 for v in vals]))
    rows = [r for r in continual_rows(base, mean, std, len(ok)) if r["metric"] != "final_accuracy"]
    final = [fmean(r["matrix"][K]) for r in ok]
    rows.append(make_row(**base, metric="final_accuracy", **_ci(mean_ci(final, config.seed)), unit="sequences"))
    steps = [s for r in ok for s in r["steps"] if s.get("timing")]
    samples = {key: [s["timing"][key] for s in steps if key in s["timing"]]
               for key in ("train_s", "merge_s", "answer_s")}
    return rows + [make_row(**base, **fields) for fields in timing_rows(samples)]


def _ci(stat: dict) -> dict:
    return {"value": stat["mean"], "ci_low": stat["ci_low"], "ci_high": stat["ci_high"], "n": stat["n"]}
