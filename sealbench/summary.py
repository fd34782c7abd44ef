"""From per-unit rows to a run summary: accuracies with n and CIs, paired differences, timings.

Accuracy follows SEAL: the mean over passages of each passage's accuracy (a passage with k edits
averages them first). Micro accuracy (over all question verdicts), SQuAD EM and F1 are reported
beside it. Every figure carries its n and a 95% bootstrap CI over passages.
"""
from __future__ import annotations

from collections import defaultdict
from statistics import fmean, median

from .stats import fmt_ci, mean_ci, paired_difference

TIMING_KEYS = ("generate_s", "train_s", "answer_s", "grade_s", "total_s")


def per_passage(rows: list[dict], metric: str) -> dict[str, float]:
    """passage_id -> mean over that passage's successful edits of `metric`."""
    by_passage: dict[str, list[float]] = defaultdict(list)
    for r in rows:
        if r["status"] == "ok":
            by_passage[r["passage_id"]].append(r[metric])
    return {pid: fmean(v) for pid, v in by_passage.items()}


def summarize_contender(rows: list[dict], seed: int = 0) -> dict:
    ok = [r for r in rows if r["status"] == "ok"]
    verdicts = [q["correct"] for r in ok for q in r["questions"]]
    out = {
        "n_units": len(rows),
        "n_failed": len(rows) - len(ok),
        "n_passages": len({r["passage_id"] for r in ok}),
        "n_questions": len({(r["passage_id"], q["question"]) for r in ok for q in r["questions"]}),
        "n_edits": len(ok),
        "accuracy": mean_ci(list(per_passage(ok, "accuracy").values()), seed=seed),
        "micro_accuracy": mean_ci([float(v) for v in verdicts], seed=seed),
        "exact_match": mean_ci(list(per_passage(ok, "em").values()), seed=seed),
        "f1": mean_ci(list(per_passage(ok, "f1").values()), seed=seed),
        "errors": sorted({r["error"] for r in rows if r["status"] != "ok"})[:5],
    }
    timing = {}
    for key in TIMING_KEYS:
        values = [r["timing"][key] for r in ok if r.get("timing", {}).get(key) is not None]
        if values:
            timing[key] = {"median": median(values), "mean": fmean(values), "n": len(values)}
    trained = [r["train"] for r in ok if r.get("train")]
    if trained:
        timing["train_steps"] = {"median": median(t["steps"] for t in trained), "n": len(trained)}
        timing["train_tokens"] = {"median": median(t["tokens"] for t in trained), "n": len(trained)}
    peaks = [r["timing"]["peak_mem_mb"] for r in ok if r.get("timing", {}).get("peak_mem_mb")]
    if peaks:
        timing["peak_mem_mb"] = {"max": max(peaks), "n": len(peaks)}
    out["timing"] = timing
    return out


def summarize_knowledge(rows: list[dict], contenders: list[str], seed: int = 0,
                        reference: str = "base") -> dict:
    by_contender: dict[str, list[dict]] = defaultdict(list)
    for r in rows:
        by_contender[r["contender"]].append(r)
    results = {name: summarize_contender(by_contender.get(name, []), seed) for name in contenders}
    # Paired differences against the reference contender on the passages both finished.
    paired = {}
    if reference in by_contender:
        ref = per_passage(by_contender[reference], "accuracy")
        for name in contenders:
            if name == reference or name not in by_contender:
                continue
            mine = per_passage(by_contender[name], "accuracy")
            common = sorted(set(ref) & set(mine))
            if common:
                paired[name] = paired_difference([mine[p] for p in common], [ref[p] for p in common], seed=seed)
    # SEAL's question is whether RL beats the notes it started from (self-notes) and a teacher's.
    seal_pairs = {}
    if "seal" in by_contender:
        mine = per_passage(by_contender["seal"], "accuracy")
        for other in ("self-notes", "teacher-notes", "passage"):
            if other in by_contender:
                theirs = per_passage(by_contender[other], "accuracy")
                common = sorted(set(mine) & set(theirs))
                if common:
                    seal_pairs[other] = paired_difference([mine[p] for p in common],
                                                          [theirs[p] for p in common], seed=seed)
    return {"contenders": results, f"paired_vs_{reference}": paired, "reference": reference,
            "paired_seal_vs": seal_pairs}


def knowledge_table(summary: dict) -> str:
    """A Markdown table of one run (also printed at the end of `sealbench run`)."""
    ref = summary.get("reference", "base")
    paired = summary.get(f"paired_vs_{ref}", {})
    lines = [
        f"### {summary.get('task', '')} · {summary.get('protocol', 'single')} · model {summary.get('model', '')} "
        f"· grader {summary.get('grader', '')}",
        "",
        f"| contender | accuracy % [95% CI] | Δ vs {ref} (p) | micro acc % | EM % | F1 % | passages | questions | edits | failed | s/edit (train / answer) |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for name, s in summary["contenders"].items():
        t = s.get("timing", {})
        def med(k):
            return f"{t[k]['median']:.1f}" if k in t else "–"
        diff = paired.get(name)
        diff_txt = f"{diff['mean'] * 100:+.1f} (p={diff['p_value']:.2f})" if diff else "–"
        lines.append(
            f"| {name} | {fmt_ci(s['accuracy'])} | {diff_txt} | {fmt_ci(s['micro_accuracy'])} | "
            f"{fmt_ci(s['exact_match'])} | {fmt_ci(s['f1'])} | {s['n_passages']} | {s['n_questions']} | "
            f"{s['n_edits']} | {s['n_failed']} | {med('total_s')} ({med('train_s')} / {med('answer_s')}) |")
    for other, d in summary.get("paired_seal_vs", {}).items():
        lines.append(f"\nseal − {other}: {d['mean'] * 100:+.1f} points [{d['ci_low'] * 100:+.1f}, "
                     f"{d['ci_high'] * 100:+.1f}], paired over {d['n']} passages, p={d['p_value']:.2f}")
    for name, rl in summary.get("seal_rl", {}).items():
        from .rl import rl_table

        lines += ["", f"RL run of `{name}` ({rl['run_id']}):", "", rl_table(rl).rstrip()]
    lines.append("")
    lines.append("Accuracy = mean over passages of per-passage accuracy (SEAL's metric); CIs: 95% "
                 "bootstrap over passages; Δ: paired over common passages, sign-flip permutation p.")
    return "\n".join(lines) + "\n"
