"""`sealbench compare reports/`: every run folder's numbers side by side (Markdown, CSV, HTML, PNG).

Reads each `reports/<run-id>/summary.json` (+ manifest.json, config.json) and writes to `--out`
(default `reports/compare/`):

    compare.md / compare.html     all tables, one section each
    runs.csv                      one row per run: task, protocol, model, device, the config fields
                                  that differ between runs
    accuracy.csv                  one row per (run, contender): headline metric with n and 95% CI
    paired.csv                    paired differences against `base`
    cpt.csv                       accuracy against N (CPT scale)
    continual.csv                 forgetting matrices, one row per cell (mean, std, n sequences)
    timing.csv                    time per edit broken down, tokens, peak memory, device
    rounds.csv                    RL rounds (when a summary has `rounds`)
    plots/*.png                   CPT curves, forgetting heatmaps + retention, time bars, RL rewards

Tables are grouped by (task, protocol, model); inside a group the columns are the runs (keyed by
run id, with the config fields that differ between them in the legend), so runs of different
configs sit side by side and a contender missing from one run is an empty cell ("–"). Tasks this
module does not know (e.g. ARC) are shown through their generic fields: a `contenders` mapping
with a headline metric (`metric` names it, else the first of accuracy/pair_solved/pass_at_2/...),
and every other scalar in the generic table.
"""
from __future__ import annotations

import csv
import html
import io
import json
import math
from dataclasses import dataclass, field
from pathlib import Path

from .stats import fmt_ci

METRIC_KEYS = ("accuracy", "pairs_solved", "pair_solved", "task_pass2", "pass_at_2", "solved", "solve_rate", "score", "mean_reward", "reward")
TIMING_COLUMNS = ("generate_s", "train_s", "merge_s", "answer_s", "grade_s", "total_s")
DASH = "–"


class CompareError(RuntimeError):
    """Nothing to compare (no run folders with a summary); the message says where it looked."""


# ------------------------------------------------------------------------------------ loading
@dataclass
class Run:
    run_id: str
    path: Path
    summary: dict
    manifest: dict = field(default_factory=dict)
    config: dict = field(default_factory=dict)
    diff: dict = field(default_factory=dict)   # config fields that differ from other runs
    key_config: dict = field(default_factory=dict)

    @property
    def task(self) -> str:
        return str(self.summary.get("task") or self.config.get("task") or "unknown")

    @property
    def protocol(self) -> str:
        return str(self.summary.get("protocol") or self.config.get("protocol") or "single")

    @property
    def model(self) -> str:
        name = (self.manifest.get("model") or {}).get("name")
        return str(self.summary.get("model") or self.config.get("model") or name or "unknown")

    @property
    def device(self) -> str:
        return str(self.summary.get("device_name") or self.manifest.get("device_name")
                   or self.manifest.get("device") or "")

    @property
    def group(self) -> tuple[str, str, str]:
        return (self.task, self.protocol, self.model)

    @property
    def contenders(self) -> dict[str, dict]:
        c = self.summary.get("contenders")
        if isinstance(c, dict):
            return {k: v for k, v in c.items() if isinstance(v, dict)}
        if isinstance(c, list):  # a list of {name: ..., ...}
            return {str(v.get("name", i)): v for i, v in enumerate(c) if isinstance(v, dict)}
        return {}

    @property
    def label(self) -> str:
        return self.run_id


def _read_json(path: Path) -> dict:
    try:
        return json.loads(path.read_text())
    except (OSError, json.JSONDecodeError):
        return {}


def find_run_dirs(reports_dir: Path) -> list[Path]:
    """Folders holding a summary.json or config.json: direct children, or the dir itself."""
    reports_dir = Path(reports_dir)
    if (reports_dir / "summary.json").exists():
        return [reports_dir]
    if not reports_dir.is_dir():
        return []
    return sorted(p for p in reports_dir.iterdir()
                  if p.is_dir() and ((p / "summary.json").exists() or (p / "config.json").exists()))


def load_runs(reports_dir: str | Path) -> tuple[list[Run], list[str]]:
    """Complete runs (with summary.json) and the ids of folders without one (unfinished)."""
    runs, unfinished = [], []
    for d in find_run_dirs(Path(reports_dir)):
        summary = _read_json(d / "summary.json")
        if not summary:
            unfinished.append(d.name)
            continue
        manifest = _read_json(d / "manifest.json")
        config = manifest.get("config") or _read_json(d / "config.json")
        runs.append(Run(str(summary.get("run_id") or d.name), d, summary, manifest, config))
    _mark_diffs(runs)
    return runs, unfinished


def _flatten(obj, prefix="") -> dict:
    out = {}
    if isinstance(obj, dict):
        for k, v in obj.items():
            out.update(_flatten(v, f"{prefix}{k}."))
    elif isinstance(obj, list) and obj and all(isinstance(v, dict) and "name" in v for v in obj):
        out[prefix[:-1]] = ",".join(str(v["name"]) for v in obj)
    elif isinstance(obj, list):
        out[prefix[:-1]] = (f"{len(obj)} items" if len(obj) > 8 else ",".join(map(str, obj)))
    else:
        out[prefix[:-1]] = obj
    return out


_NOT_CONFIG = ("passage_ids", "device", "task", "protocol", "model")


KEY_CONFIG = ("n_passages", "n_values", "n_steps", "n_sequences", "seed", "grader", "train.epochs",
              "train.learning_rate", "train.batch_size", "lora.r", "budget", "preset")


def _mark_diffs(runs: list[Run]) -> None:
    """Each run's config fields that differ between runs of the same task and protocol (the
    legend), and its headline config fields."""
    flat = {}
    for r in runs:
        f = {k: v for k, v in _flatten(r.config).items() if k not in _NOT_CONFIG}
        f.pop("contenders", None)
        flat[r.run_id] = f
        r.key_config = {k: f[k] for k in KEY_CONFIG if f.get(k) is not None}
    groups: dict[tuple, list[Run]] = {}
    for r in runs:
        groups.setdefault((r.task, r.protocol), []).append(r)
    for members in groups.values():
        fs = [flat[r.run_id] for r in members]
        keys = sorted({k for f in fs for k in f})
        differing = [k for k in keys if len({json.dumps(f.get(k), default=str) for f in fs}) > 1]
        for r, f in zip(members, fs):
            r.diff = {k: f.get(k) for k in differing}


# ------------------------------------------------------------------------------------- values
def _num(x) -> float | None:
    if isinstance(x, bool):
        return float(x)
    if isinstance(x, (int, float)) and not (isinstance(x, float) and math.isnan(x)):
        return float(x)
    return None


def as_stat(v) -> dict | None:
    """A metric as {mean, ci_low, ci_high, n}: accepts a mean_ci dict or a bare number."""
    if isinstance(v, dict) and "mean" in v:
        m = _num(v.get("mean"))
        if m is None:
            return None
        return {"mean": m, "ci_low": _num(v.get("ci_low")) if _num(v.get("ci_low")) is not None else float("nan"),
                "ci_high": _num(v.get("ci_high")) if _num(v.get("ci_high")) is not None else float("nan"),
                "n": v.get("n", 0) or 0}
    m = _num(v)
    if m is None:
        return None
    return {"mean": m, "ci_low": float("nan"), "ci_high": float("nan"), "n": None}


def headline(run: Run, stats: dict) -> tuple[str, dict | None]:
    """(metric name, stat) of one contender's headline number."""
    keys = ([run.summary["metric"]] if isinstance(run.summary.get("metric"), str) else []) + list(METRIC_KEYS)
    for k in keys:
        if k in stats:
            s = as_stat(stats[k])
            if s is not None:
                return k, s
    return "", None


def headline_note(run: Run, name: str, stats: dict) -> str:
    if run.protocol == "cpt" and stats.get("n_at"):
        return f"N={stats['n_at']}"
    if run.protocol == "continual":
        return f"after {run.summary.get('n_steps', '?')} edits"
    return ""


def n_of(stats: dict, stat: dict | None) -> str:
    if stats.get("by_n") and stats.get("n_at"):  # cpt: the counts at the headline N
        stats = stats["by_n"].get(str(stats["n_at"]), stats)
    parts = []
    if stats.get("n_passages"):
        parts.append(f"{stats['n_passages']} passages")
    elif stats.get("n_sequences"):
        parts.append(f"{stats['n_sequences']} sequences")
    elif stats.get("n_tasks"):
        parts.append(f"{stats['n_tasks']} tasks")
    elif stat and stat.get("n"):
        parts.append(f"n={stat['n']}")
    if stats.get("n_questions"):
        parts.append(f"{stats['n_questions']} q")
    return ", ".join(parts)


def fmt_pct(x, digits: int = 1) -> str:
    x = _num(x)
    return DASH if x is None else f"{x * 100:.{digits}f}"


def fmt_num(x, digits: int = 2) -> str:
    x = _num(x)
    if x is None:
        return DASH
    if abs(x) >= 1000 or (x == int(x) and abs(x) < 1e6):
        return f"{x:,.0f}" if abs(x) >= 1000 else f"{x:.0f}" if x == int(x) else f"{x:.{digits}f}"
    return f"{x:.{digits}f}"


def _median(t: dict, key: str):
    v = t.get(key)
    if isinstance(v, dict):
        return v.get("median", v.get("max", v.get("mean")))
    return v


# ------------------------------------------------------------------------------------- tables
@dataclass
class Table:
    key: str                       # file-safe id (csv name inside compare)
    title: str
    headers: list[str]
    rows: list[list] = field(default_factory=list)
    note: str = ""
    csv_rows: list[dict] | None = None   # a long/tidy form for CSV (default: the rows)

    def to_markdown(self) -> str:
        def cell(x):
            return str(x if x not in (None, "") else DASH).replace("|", "\\|").replace("\n", " ")
        out = [f"### {self.title}", "", "| " + " | ".join(cell(h) for h in self.headers) + " |",
               "|" + "---|" * len(self.headers)]
        out += ["| " + " | ".join(cell(x) for x in r) + " |" for r in self.rows]
        if self.note:
            out += ["", self.note]
        return "\n".join(out) + "\n"

    def to_html(self) -> str:
        def cell(x, tag="td"):
            txt = html.escape(str(x if x not in (None, "") else DASH))
            cls = ' class="missing"' if txt == DASH else ""
            return f"<{tag}{cls}>{txt}</{tag}>"
        out = [f"<h3>{html.escape(self.title)}</h3>", "<table>",
               "<thead><tr>" + "".join(cell(h, "th") for h in self.headers) + "</tr></thead><tbody>"]
        out += ["<tr>" + "".join(cell(x) for x in r) + "</tr>" for r in self.rows]
        out.append("</tbody></table>")
        if self.note:
            out.append(f'<p class="note">{html.escape(self.note)}</p>')
        return "\n".join(out)


def _wide(key: str, title: str, runs: list[Run], rows_by: dict[tuple, dict[str, str]], lead: list[str],
          note: str = "") -> Table:
    """Rows keyed by a tuple (lead columns), one column per run; missing cells stay empty."""
    headers = lead + [r.label for r in runs]
    rows = [list(k) + [cells.get(r.run_id, DASH) for r in runs] for k, cells in rows_by.items()]
    return Table(key, title, headers, rows, note)


def runs_table(runs: list[Run], unfinished: list[str]) -> Table:
    rows, csv_rows = [], []
    for r in runs:
        diff = ", ".join(f"{k}={_short(v)}" for k, v in r.diff.items())
        key = ", ".join(f"{k}={_short(v)}" for k, v in r.key_config.items())
        started = r.manifest.get("started") or r.summary.get("written") or ""
        rows.append([r.run_id, r.task, r.protocol, r.model,
                     (r.summary.get("model_fingerprint") or (r.manifest.get("model") or {}).get("fingerprint") or ""),
                     r.device, started[:16], key, diff])
        csv_rows.append({"run_id": r.run_id, "task": r.task, "protocol": r.protocol, "model": r.model,
                         "device": r.device, "grader": r.summary.get("grader", ""), "started": started,
                         "git_commit": r.manifest.get("git_commit", ""), "path": str(r.path),
                         **{f"config.{k}": _short(v) for k, v in r.diff.items()}})
    note = ("key config: headline settings of the run; differs: every config field whose value differs "
            "between runs of the same task and protocol (– = none).")
    if unfinished:
        note += f" Unfinished (no summary.json yet, not compared): {', '.join(unfinished)}."
    t = Table("runs", "Runs", ["run id", "task", "protocol", "model", "fingerprint", "device",
                               "started", "key config", "differs"], rows, note)
    t.csv_rows = csv_rows
    return t


def _short(v) -> str:
    s = json.dumps(v, default=str) if not isinstance(v, str) else v
    return s if len(s) <= 40 else s[:37] + "..."


def _groups(runs: list[Run]) -> dict[tuple, list[Run]]:
    out: dict[tuple, list[Run]] = {}
    for r in runs:
        out.setdefault(r.group, []).append(r)
    return out


def accuracy_tables(runs: list[Run]) -> tuple[list[Table], list[dict]]:
    tables, long = [], []
    for (task, protocol, model), members in _groups(runs).items():
        rows_by: dict[tuple, dict[str, str]] = {}
        metric_names = set()
        for r in members:
            for name, s in r.contenders.items():
                metric, stat = headline(r, s)
                if metric:
                    metric_names.add(metric)
                note = headline_note(r, name, s)
                n = n_of(s, stat)
                cell = (f"{fmt_ci(stat)} ({n})" if n else fmt_ci(stat)) if stat else DASH
                if note and stat:
                    cell += f" @{note}"
                rows_by.setdefault((name,), {})[r.run_id] = cell
                long.append({"run_id": r.run_id, "task": task, "protocol": protocol, "model": model,
                             "contender": name, "metric": metric,
                             "mean": stat and stat["mean"], "ci_low": stat and stat["ci_low"],
                             "ci_high": stat and stat["ci_high"], "n": stat and stat["n"],
                             "n_passages": s.get("n_passages"), "n_questions": s.get("n_questions"),
                             "n_failed": s.get("n_failed"), "at": note,
                             "micro_accuracy": (as_stat(s.get("micro_accuracy")) or {}).get("mean"),
                             "exact_match": (as_stat(s.get("exact_match")) or {}).get("mean"),
                             "f1": (as_stat(s.get("f1")) or {}).get("mean"),
                             **{f"config.{k}": _short(v) for k, v in r.diff.items()}})
        metric = "/".join(sorted(metric_names)) or "metric"
        tables.append(_wide(f"accuracy-{task}-{protocol}-{model}",
                            f"{metric} % [95% CI] — {task} · {protocol} · {model}", members, rows_by,
                            ["contender"], "Cells: mean [95% bootstrap CI] (n). Columns are runs; see the "
                                           "Runs table for how their configs differ."))
    return tables, long


def paired_tables(runs: list[Run]) -> tuple[list[Table], list[dict]]:
    tables, long = [], []
    for (task, protocol, model), members in _groups(runs).items():
        rows_by: dict[tuple, dict[str, str]] = {}
        for r in members:
            ref = r.summary.get("reference", "base")
            paired = r.summary.get(f"paired_vs_{ref}") or {}
            for name, d in paired.items():
                # cpt: {N: diff}; single: diff
                items = d.items() if isinstance(d, dict) and "mean" not in d else [("", d)]
                for n, diff in items:
                    stat = as_stat(diff)
                    if stat is None:
                        continue
                    label = f"{name} @N={n}" if n else name
                    p = diff.get("p_value")
                    rows_by.setdefault((label, ref), {})[r.run_id] = (
                        f"{fmt_ci(stat)}" + (f" p={p:.2f}" if _num(p) is not None else "") + f" (n={stat['n']})")
                    long.append({"run_id": r.run_id, "task": task, "protocol": protocol, "model": model,
                                 "contender": name, "vs": ref, "n_cpt": n, "mean_diff": stat["mean"],
                                 "ci_low": stat["ci_low"], "ci_high": stat["ci_high"], "n": stat["n"],
                                 "p_value": p})
        if rows_by:
            tables.append(_wide(f"paired-{task}-{protocol}-{model}",
                                f"Paired difference vs base (points) — {task} · {protocol} · {model}",
                                members, rows_by, ["contender", "vs"],
                                "Mean per-passage difference over the passages both finished, 95% bootstrap CI, "
                                "sign-flip permutation p."))
    return tables, long


def cpt_tables(runs: list[Run]) -> tuple[list[Table], list[dict]]:
    tables, long = [], []
    cpt = [r for r in runs if r.protocol == "cpt"]
    for r in cpt:
        ns = [str(n) for n in r.summary.get("n_values", [])]
        rows = []
        for name, s in r.contenders.items():
            by_n = s.get("by_n", {})
            row = [name]
            for n in ns:
                e = by_n.get(n, {})
                stat = as_stat(e.get("accuracy"))
                row.append(f"{fmt_ci(stat)}" if stat else (e.get("status") or DASH))
                long.append({"run_id": r.run_id, "model": r.model, "contender": name, "N": int(n),
                             "status": e.get("status", "missing"), "mean": stat and stat["mean"],
                             "ci_low": stat and stat["ci_low"], "ci_high": stat and stat["ci_high"],
                             "n_passages": e.get("n_passages"), "n_questions": e.get("n_questions"),
                             "n_train_sequences": e.get("n_train_sequences"),
                             "train_s": (e.get("timing") or {}).get("train_s"),
                             "train_tokens": (e.get("timing") or {}).get("train_tokens")})
            rows.append(row)
        train = r.summary.get("train_config") or {}
        tables.append(Table(f"cpt-{r.run_id}", f"CPT scale — accuracy % [95% CI] against N — {r.run_id} ({r.model})",
                            ["contender"] + [f"N={n}" for n in ns], rows,
                            f"One adapter per (contender, N) on the first N passages; CI over passages. "
                            f"Training: epochs {train.get('epochs', '?')}, batch {train.get('batch_size', '?')}, "
                            f"lr {train.get('learning_rate', '?')}."))
    return tables, long


def continual_tables(runs: list[Run]) -> tuple[list[Table], list[dict]]:
    tables, long = [], []
    summary_rows = []
    for r in [r for r in runs if r.protocol == "continual"]:
        for name, s in r.contenders.items():
            mean, std = s.get("matrix_mean") or [], s.get("matrix_std") or []
            if not mean:
                continue
            K = len(mean[0])
            rows = []
            for i, row in enumerate(mean):
                cells = []
                for j, m in enumerate(row):
                    sd = std[i][j] if i < len(std) and j < len(std[i]) else None
                    cells.append(DASH if m is None else f"{m * 100:.1f} ± {fmt_pct(sd)}")
                    long.append({"run_id": r.run_id, "model": r.model, "contender": name, "after_edit": i,
                                 "passage": j, "mean": m, "std": sd, "n_sequences": s.get("n_sequences")})
                rows.append([f"{i}" + (" (before)" if i == 0 else "")] + cells)
            tables.append(Table(f"continual-{r.run_id}-{name}",
                                f"Forgetting matrix — {name} — {r.run_id} ({r.model}, K={K}, "
                                f"S={s.get('n_sequences')})",
                                ["after edit"] + [f"passage {j}" for j in range(K)], rows,
                                "Accuracy % (mean ± std over sequences). Row k: after the k-th merged edit; "
                                "column j: the j-th passage of the sequence; – = not yet edited."))
            summary_rows.append([r.run_id, r.model, name, s.get("n_sequences"),
                                 fmt_ci(as_stat(s.get("accuracy_before"))), fmt_pct(s.get("accuracy_just_edited")),
                                 fmt_ci(as_stat(s.get("accuracy"))), fmt_pct(s.get("forgetting"))])
    if summary_rows:
        tables.insert(0, Table("continual-summary", "Continual self-edits — summary",
                               ["run", "model", "contender", "sequences", "before any edit %",
                                "just after own edit %", "after all K edits %", "forgetting (points)"],
                               summary_rows,
                               "Forgetting = mean over passages of (accuracy right after its edit − accuracy "
                               "after the last edit)."))
    return tables, long


def timing_table(runs: list[Run]) -> tuple[Table, list[dict]]:
    rows, long = [], []
    for r in runs:
        threads = (r.manifest.get("machine") or {}).get("torch_threads", "")
        for name, s in r.contenders.items():
            entries = []
            if r.protocol == "cpt" and s.get("adapt", True):
                for n, e in (s.get("by_n") or {}).items():
                    if e.get("status") == "ok":
                        entries.append((f"{name} @N={n}", e.get("timing") or {}))
            elif r.protocol == "cpt":  # a non-adapting contender answered the whole pool once
                e = next((e for e in (s.get("by_n") or {}).values() if e.get("status") == "ok"), {})
                entries.append((f"{name} (all N, whole pool)", e.get("timing") or {}))
            else:
                entries.append((name, s.get("timing") or {}))
            for label, t in entries:
                if not t:
                    continue
                vals = {k: _median(t, k) for k in TIMING_COLUMNS}
                steps, tokens, peak = _median(t, "train_steps"), _median(t, "train_tokens"), _median(t, "peak_mem_mb")
                rows.append([r.run_id, r.protocol, label] + [fmt_num(vals[k]) for k in TIMING_COLUMNS]
                            + [fmt_num(steps), fmt_num(tokens), fmt_num(peak, 0), r.device, threads])
                long.append({"run_id": r.run_id, "protocol": r.protocol, "model": r.model, "contender": label,
                             **vals, "train_steps": steps, "train_tokens": tokens, "peak_mem_mb": peak,
                             "device": r.device, "torch_threads": threads})
    t = Table("timing", "Time per edit (median seconds) and cost",
              ["run", "protocol", "contender", "generate", "train", "merge", "answer", "grade", "total",
               "train steps", "train tokens", "peak MB", "device", "threads"], rows,
              "Medians over edits (single/continual) or the one adapter per N (cpt). generate = self-edit "
              "generation per edit; tokens = real tokens seen in training; peak = CUDA peak or CPU max RSS.")
    return t, long


def rounds_table(runs: list[Run]) -> tuple[Table | None, list[dict]]:
    long = []
    for r in runs:
        for rd in r.summary.get("rounds") or []:
            if isinstance(rd, dict):
                row = {"run_id": r.run_id}
                for k, v in rd.items():
                    stat = as_stat(v) if isinstance(v, dict) else None
                    if stat is not None:  # reward stats: "mean [ci_low, ci_high] (n)"
                        row[k] = fmt_ci(stat) + f" (n={stat.get('n', '?')})"
                    elif _num(v) is not None or isinstance(v, str):
                        row[k] = v
                long.append(row)
    if not long:
        return None, []
    keys = ["run_id"] + sorted({k for row in long for k in row if k != "run_id"},
                               key=lambda k: (k != "round", k))
    rows = [[row.get(k, DASH) if not isinstance(row.get(k), float) else fmt_num(row[k], 3) for k in keys]
            for row in long]
    return Table("rounds", "RL rounds", keys, rows, "Per-round statistics of the SEAL outer loop."), long


def generic_table(runs: list[Run]) -> tuple[Table | None, list[dict]]:
    """Every scalar / mean-CI field of contenders of tasks or protocols this module does not know."""
    known = {("seal_squad_nocontext", p) for p in ("single", "cpt", "continual")}
    long = []
    for r in runs:
        if (r.task, r.protocol) in known:
            continue
        cons = r.contenders or {"(run)": r.summary}
        for name, s in cons.items():
            for k, v in sorted(_flatten(s).items()):
                stat = None
                if k.endswith(".mean"):
                    stat = _num(v)
                    k = k[:-5]
                elif any(k.endswith(x) for x in (".ci_low", ".ci_high", ".n", ".median")):
                    continue
                elif _num(v) is not None:
                    stat = _num(v)
                if stat is not None:
                    long.append({"run_id": r.run_id, "task": r.task, "protocol": r.protocol,
                                 "contender": name, "field": k, "value": stat})
    if not long:
        return None, []
    rows = [[x["run_id"], x["task"], x["contender"], x["field"], fmt_num(x["value"], 4)] for x in long]
    return Table("generic", "Other tasks — every numeric field", ["run", "task", "contender", "field", "value"],
                 rows, "Tasks/protocols without a dedicated table are listed field by field."), long


# ------------------------------------------------------------------------------------ outputs
def _write_csv(path: Path, rows: list[dict]) -> None:
    keys: list[str] = []
    for r in rows:
        keys += [k for k in r if k not in keys]
    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=keys, extrasaction="ignore")
    w.writeheader()
    for r in rows:
        w.writerow({k: ("" if v is None or (isinstance(v, float) and math.isnan(v)) else v) for k, v in r.items()})
    path.write_text(buf.getvalue())


CSS = """
body{font-family:system-ui,-apple-system,Segoe UI,Roboto,sans-serif;margin:2rem auto;max-width:1200px;
 padding:0 1rem;color:#1f2328;line-height:1.45}
h1{font-size:1.6rem;margin-bottom:.2rem}h2{margin-top:2.2rem;border-bottom:1px solid #d0d7de;padding-bottom:.3rem}
h3{font-size:1.02rem;margin:1.4rem 0 .4rem}
table{border-collapse:collapse;margin:.3rem 0 .6rem;font-size:.86rem;display:block;overflow-x:auto}
th,td{border:1px solid #d0d7de;padding:.28rem .55rem;text-align:right;white-space:nowrap}
th{background:#f6f8fa;text-align:center}td:first-child,th:first-child{text-align:left}
tr:nth-child(even) td{background:#fbfcfd}td.missing{color:#8c959f;text-align:center}
tr.ref td{background:#fff8e6;font-style:italic}tr.ref td:first-child::after{content:" (reference)";color:#9a6700}
.note{color:#57606a;font-size:.82rem;margin:.1rem 0 1rem}.meta{color:#57606a;font-size:.9rem}
.badge{display:inline-block;background:#fff1c2;color:#7d4e00;border-radius:4px;padding:0 .35rem;font-size:.75rem}
img{max-width:100%;border:1px solid #eaeef2;margin:.4rem 0}.figs{display:flex;flex-wrap:wrap;gap:.8rem}
.figs figure{margin:0;flex:1 1 520px}figcaption{font-size:.8rem;color:#57606a}
"""


def page(title: str, body: str) -> str:
    return (f"<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\"><title>{html.escape(title)}</title>"
            f"<meta name=\"viewport\" content=\"width=device-width,initial-scale=1\"><style>{CSS}</style></head>"
            f"<body>\n{body}\n</body></html>\n")


def build_tables(runs: list[Run], unfinished: list[str] | None = None) -> dict[str, tuple[list[Table], list[dict]]]:
    """Section name -> (tables, long CSV rows)."""
    sections: dict[str, tuple[list[Table], list[dict]]] = {}
    sections["runs"] = ([runs_table(runs, unfinished or [])], runs_table(runs, unfinished or []).csv_rows)
    sections["accuracy"] = accuracy_tables(runs)
    sections["paired"] = paired_tables(runs)
    sections["cpt"] = cpt_tables(runs)
    sections["continual"] = continual_tables(runs)
    t, long = timing_table(runs)
    sections["timing"] = ([t] if t.rows else [], long)
    for name, fn in (("rounds", rounds_table), ("generic", generic_table)):
        t, long = fn(runs)
        sections[name] = ([t] if t else [], long)
    return sections


SECTION_TITLES = {"runs": "Runs", "accuracy": "Accuracy by task · protocol · model",
                  "paired": "Paired differences against base", "cpt": "Continued pretraining: CPT scale",
                  "continual": "Continual self-edits: forgetting", "timing": "Time per edit",
                  "rounds": "RL rounds", "generic": "Other tasks"}


def compare(reports_dir: str | Path, out_dir: str | Path | None = None, plots: bool = True) -> dict:
    """Write the comparison of every run under `reports_dir` to `out_dir`; return what was written.

    Raises CompareError when no run folder has a summary.json.
    """
    reports_dir = Path(reports_dir)
    out = Path(out_dir) if out_dir else reports_dir / "compare"
    runs, unfinished = load_runs(reports_dir)
    if not runs:
        extra = f" ({len(unfinished)} unfinished run folder(s) without summary.json)" if unfinished else ""
        raise CompareError(f"no finished runs in {reports_dir}{extra}: run `sealbench run ...` first")
    out.mkdir(parents=True, exist_ok=True)
    sections = build_tables(runs, unfinished)
    written = {"csv": [], "png": []}
    for name, (_, long) in sections.items():
        if long:
            path = out / f"{name}.csv"
            _write_csv(path, long)
            written["csv"].append(str(path))
    figures: list[tuple[str, str]] = []
    if plots:
        from . import plots as plotting

        figures = plotting.make_all(runs, out / "plots")
        written["png"] = [p for p, _ in figures]
    md = [f"# sealbench comparison\n\n{len(runs)} run(s) from `{reports_dir}`.\n"]
    body = [f"<h1>sealbench comparison</h1><p class=\"meta\">{len(runs)} run(s) from "
            f"<code>{html.escape(str(reports_dir))}</code></p>"]
    for name, (tables, _) in sections.items():
        if not tables:
            continue
        md.append(f"## {SECTION_TITLES[name]}\n")
        body.append(f"<h2>{SECTION_TITLES[name]}</h2>")
        for t in tables:
            md.append(t.to_markdown())
            body.append(t.to_html())
    if figures:
        md.append("## Plots\n")
        body.append("<h2>Plots</h2><div class=\"figs\">")
        for path, caption in figures:
            rel = Path(path).relative_to(out).as_posix()
            md.append(f"![{caption}]({rel})\n")
            body.append(f"<figure><img src=\"{html.escape(rel)}\" alt=\"{html.escape(caption)}\">"
                        f"<figcaption>{html.escape(caption)}</figcaption></figure>")
        body.append("</div>")
    (out / "compare.md").write_text("\n".join(md))
    (out / "compare.html").write_text(page("sealbench comparison", "\n".join(body)))
    written.update(md=str(out / "compare.md"), html=str(out / "compare.html"), n_runs=len(runs),
                   unfinished=unfinished)
    return written


def main(argv: list[str] | None = None) -> int:
    import argparse
    import sys

    p = argparse.ArgumentParser(prog="sealbench compare", description="Compare every run under a reports dir.")
    p.add_argument("reports_dir", nargs="?", default="reports")
    p.add_argument("--out", default=None, help="output folder (default: REPORTS_DIR/compare)")
    p.add_argument("--no-plots", action="store_true")
    args = p.parse_args(argv)
    try:
        w = compare(args.reports_dir, args.out, plots=not args.no_plots)
    except CompareError as err:
        print(f"sealbench: error: {err}", file=sys.stderr)
        return 2
    print(f"compared {w['n_runs']} run(s): {w['md']}, {w['html']}, {len(w['csv'])} CSV, {len(w['png'])} PNG",
          file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
