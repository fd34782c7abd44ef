"""From ARC unit rows to results-table rows (report/results.py; docs/reports.md).

Per contender, over its `ok` rows (one per (task, self-edit) pair):
  pairs_solved        SEAL's headline (§4.2): fraction of (task, self-edit) pairs whose task is
                      solved; 95% bootstrap CI over pairs (unit pairs).
  task_pass2          mean over tasks of the fraction of the task's edits that solve it (2 attempts
                      each), CI over tasks; and per task at `task=<id>` (unit pairs).
  task_any_edit       fraction of tasks solved by at least one edit (unit tasks).
  test_inputs_solved  fraction of test inputs answered exactly (unit items).
  invalid_edits, over_budget_edits, train_error_edits   counts (value = count, n = pairs).
  failed_units        units without a result (value = count, n = planned units).
Timings (median, quartiles as the interval; unit edits): seconds_per_edit (generate + data + train
+ answer), generate_s (the self-edit), data_s (TTT data), train_s (the edit's share of its training
batch), answer_s (its share of the prediction batch); train_steps, ttt_examples; peak_mem_mb (max).
"""
from __future__ import annotations

from statistics import fmean

from ...schema import make_row
from ...stats import edit_costs, mean_ci
from ...stats import timing_rows as stats_timing_rows

TIMINGS = ("generate_s", "data_s", "train_s", "answer_s")
COUNTS = (("invalid_edits", "invalid"), ("over_budget_edits", "over_budget"), ("train_error_edits", "train_error"))


def summarize(config, plan: list, rows: dict[str, dict], common: dict) -> list[dict]:
    """Results-table rows for an ARC run. `rows` maps unit key -> its latest row; `common` holds the
    run-wide fields (run_id, task, protocol, model, grader "exact-grid", eval_set, ...)."""
    out, seed = [], config.seed
    by_contender: dict[str, list] = {}
    for u in plan:
        by_contender.setdefault(u.contender.name, []).append(u)
    for name, units in by_contender.items():
        base = {**common, "contender": name, "role": units[0].contender.role}
        mine = [(u, rows[u.key]) for u in units if u.key in rows]
        ok = [(u, r) for u, r in mine if r["status"] == "ok"]
        out.append(make_row(**base, metric="failed_units", value=float(len(mine) - len(ok)), n=len(units),
                            unit="edits"))
        if not ok:
            continue
        by_task: dict[str, list[float]] = {}
        for u, r in ok:
            by_task.setdefault(u.info["task_id"], []).append(float(r["solved"]))
        out.append(make_row(**base, metric="pairs_solved", **_ci(mean_ci([float(r["solved"]) for _, r in ok], seed)),
                            unit="pairs"))
        out.append(make_row(**base, metric="task_pass2", **_ci(mean_ci([fmean(v) for v in by_task.values()], seed)),
                            unit="tasks"))
        out.append(make_row(**base, metric="task_any_edit", **_ci(mean_ci([max(v) for v in by_task.values()], seed)),
                            unit="tasks"))
        tests = [float(x) for _, r in ok for x in r.get("test_solved", [])]
        out.append(make_row(**base, metric="test_inputs_solved", **_ci(mean_ci(tests, seed)), unit="items"))
        for task_id, v in by_task.items():
            out.append(make_row(**base, metric="task_pass2", at=f"task={task_id}", value=fmean(v), n=len(v),
                                unit="pairs"))
        for metric, status in COUNTS:
            count = sum(r["edit_status"] == status for _, r in ok)
            out.append(make_row(**base, metric=metric, value=float(count), n=len(ok), unit="pairs"))
        out += timing_rows(base, [r for _, r in ok])
    return out


def timing_rows(base: dict, ok: list[dict]) -> list[dict]:
    """Median [IQR] timing and cost rows over `ok` unit rows (module doc; stats.py `timing_rows`)."""
    samples = edit_costs(ok, TIMINGS, counts={"ttt_examples": "n_ttt_examples"})
    return [make_row(**base, **fields) for fields in stats_timing_rows(samples)]


def _ci(stat: dict) -> dict:
    return {"value": stat["mean"], "ci_low": stat["ci_low"], "ci_high": stat["ci_high"], "n": stat["n"]}
