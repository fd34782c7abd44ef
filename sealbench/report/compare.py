"""`sealbench compare DIR [--out OUT] [--grader NAME] [--no-plots]`: every finished run under DIR side by side.

Reads every finished run folder at any depth under DIR (`results.load_results`) and writes to OUT
(default DIR/compare/):

    results.csv      every row of every run (the results table, `results.COLUMNS`)
    runs.csv         one row per run: task, protocol, model, grader, eval set, device, written,
                     and the config.json fields that differ between runs of its group
    compare.md       the tables below (pandas -> tabulate), plots linked relatively
    compare.html     the same, self-contained (inline CSS; PNGs referenced as plots/*.png)
    plots/*.png      headline bars, CPT curves, forgetting heatmaps, time per edit, RL rounds

A group is one (task, protocol, model, grader, eval_set): rows are only comparable inside one.
In each group's tables the contenders are rows and the runs are columns, so runs of different
configs sit side by side and a contender missing from a run is an empty cell ("–"). Sections:
headline metric, other metrics, paired differences, CPT accuracy against N, continual forgetting
matrices (mean ± std), time per edit (every family), RL rounds. Every group's title names its
grader; "other metrics" carries the answer length (`answer_words`, mean words per answer).
`--grader NAME` keeps the rows measured with NAME (and those of ARC's exact-grid); without it a run
graded twice (`sealbench grade`) shows one group per grader. A run whose answers carry verdicts
of two or more graders gets a "graders compared" section: per contender the answers, each
grader's accuracy, their agreement and the bias (the other grader minus the run's, in points), and
the mean answer length. DIR without a finished run is an error (exit 2, one line).
"""
from __future__ import annotations

import argparse
import hashlib
import json
import sys
from pathlib import Path

import pandas as pd

from markupsafe import Markup

from . import pages, plots
from .results import (COST, DASH, cell_text, csv_text, headline, label, load_results, matrix_table,
                      md_table, natural, order_key, select_grader, sort_table, wide)

GROUP = ["task", "protocol", "model", "grader", "eval_set"]
RL_GROUP = ["task", "model", "grader"]  # RL rows span two eval sets (training items, held-out)
KINDS = {"bars": "headline", "cpt": "CPT", "forgetting": "forgetting", "time": "time-per-edit", "rl": "RL rounds"}
NOT_CONFIG = ("passage_ids", "task_ids", "heldout_passage_ids", "contenders")
CSS = """
body{font-family:system-ui,-apple-system,Segoe UI,Roboto,sans-serif;margin:1.5rem auto;max-width:1360px;
 padding:0 1rem;color:#1f2328;line-height:1.45}
h1{font-size:1.5rem}h2{margin-top:2rem;border-bottom:1px solid #d0d7de;padding-bottom:.3rem}
h3{font-size:1rem;margin:1.2rem 0 .3rem}
table{border-collapse:collapse;margin:.3rem 0 .6rem;font-size:.85rem;display:block;overflow-x:auto}
th,td{border:1px solid #d0d7de;padding:.25rem .5rem;text-align:right;white-space:nowrap}
th{background:#f6f8fa;text-align:center}td:first-child,th:first-child{text-align:left}
td em{color:#7d4e00}.note{color:#57606a;font-size:.82rem;margin:.1rem 0 1rem}
img{max-width:100%;border:1px solid #eaeef2;margin:.4rem 0}figure{margin:0}figcaption{font-size:.8rem;color:#57606a}
"""


class CompareError(RuntimeError):
    """Nothing to compare; the message says where it looked."""


# ----------------------------------------------------------------------------------- rendering
def page(title: str, body: str) -> str:
    """A self-contained HTML page (inline CSS, no external assets; templates/page.html.j2)."""
    return pages.page(title, body, CSS)


def html_table(df: pd.DataFrame, emphasis: list[bool] | None = None,
               titles: tuple[str, list[str]] | None = None) -> str:
    """The DataFrame as an HTML table (templates/table.html.j2: pandas' layout); every cell escaped;
    cells of rows marked in `emphasis` in <em>; titles=(column, one text per row) become that
    column's hover text."""
    return pages.table(df, emphasis, titles)


def _slug(*parts) -> str:
    text = "-".join(map(str, parts))
    readable = "".join(c if c.isalnum() else "-" for c in text.lower())[:60].strip("-")
    return f"{readable}-{hashlib.sha256(text.encode()).hexdigest()[:6]}"


def flatten(obj, prefix: str = "") -> dict:
    """Nested config dicts as {'train.epochs': 5, ...}; lists as compact JSON."""
    if isinstance(obj, dict):
        out = {}
        for k, v in obj.items():
            out.update(flatten(v, f"{prefix}{k}."))
        return out
    if isinstance(obj, list) and obj and all(isinstance(v, dict) and "name" in v for v in obj):
        return {prefix[:-1]: ",".join(str(v["name"]) for v in obj)}
    return {prefix[:-1]: json.dumps(obj, sort_keys=True) if isinstance(obj, list) else obj}


def config_diffs(df: pd.DataFrame) -> dict[str, str]:
    """run_id -> 'key=value, ...' of the config.json fields that differ between the runs of its
    group (config.json read from `df.attrs['run_dirs']`; item id lists are left out)."""
    configs = {}
    for run, folder in (df.attrs.get("run_dirs") or {}).items():
        try:
            raw = json.loads((Path(folder) / "config.json").read_text())
        except (OSError, json.JSONDecodeError):
            raw = {}
        configs[run] = {k: v for k, v in flatten(raw).items() if k.split(".")[0] not in NOT_CONFIG}
    out = {}
    for _, g in df.groupby(GROUP, sort=True):
        runs = sorted(g["run_id"].unique())
        keys = sorted({k for r in runs for k in configs.get(r, {})})
        differ = [k for k in keys if len({json.dumps(configs.get(r, {}).get(k), default=str) for r in runs}) > 1]
        for r in runs:
            text = ", ".join(f"{k}={configs.get(r, {}).get(k, DASH)}" for k in differ)
            out[r] = ", ".join(filter(None, [out.get(r, ""), text]))
    return out


# ----------------------------------------------------------------------------------- tables
def _at_cell(row) -> str:
    return cell_text(row) + (f" @{row['at']}" if row["at"] else "")


def group_tables(df: pd.DataFrame) -> list[tuple[str, list[tuple[str, pd.DataFrame]], list[tuple[str, pd.DataFrame]]]]:
    """Per comparable group: (title, [(caption, table)], [(kind, rows to plot)])."""
    df = df.assign(contender=[label(r) for _, r in df.iterrows()])
    out = []
    for key, g in df[df["protocol"] != "rl"].groupby(GROUP, sort=True):
        task, protocol, model, grader, eval_set = key
        paired, cost = g["vs"] != "", g["metric"].isin(COST)
        cells = g["at"].str.contains("after=")
        h = headline(g)
        metric = h["metric"].iloc[0] if len(h) else ""
        rest = g[~paired & ~cost & ~cells & (g["at"] == "") & (g["metric"] != metric)]
        tables = [(f"{plots.axis_label(metric)} [95% CI] (n), grader {grader} — contenders × runs",
                   wide(h, ["contender"], ["run_id"], _at_cell)),
                  ("other metrics", wide(rest, ["contender", "metric"], ["run_id"])),
                  ("paired differences (points, 95% CI, sign-flip p)",
                   wide(g[paired], ["contender", "vs", "at"], ["run_id"]))]
        figs = [("bars", h)]
        if protocol == "cpt":
            for run, r in g[(g["metric"] == "accuracy") & ~paired].groupby("run_id"):
                tables.append((f"CPT: accuracy % against N — {run}",
                               wide(r, ["contender"], ["at"], first=tuple(sorted(r["at"].unique(), key=natural)))))
            figs.append(("cpt", g[(g["metric"] == "accuracy") & ~paired]))
        for (run, name), r in g[cells].groupby(["run_id", "contender"]):
            tables.append((f"forgetting matrix: {name} — {run} (accuracy %, mean ± std over sequences; "
                           "row k: after edit k)", matrix_table(r)))
            figs.append(("forgetting", r))
        tables.append(("time per edit: median [IQR] seconds (n edits), tokens, peak MB",
                       wide(g[cost], ["run_id", "contender", "at"], ["metric"], first=COST)))
        figs.append(("time", g[cost]))
        title = f"{task} · {protocol} · {model} · grader {grader} · eval set {eval_set}"
        out.append((title, [(c, sort_table(t)) for c, t in tables if not t.empty], figs))
    for key, g in df[df["protocol"] == "rl"].groupby(RL_GROUP, sort=True):
        tables = [("RL rounds (round 0 = the starting model)", wide(g, ["run_id", "at"], ["metric"], first=(
            "reward_all", "reward_kept", "heldout_accuracy", "heldout_diff")))]
        out.append((f"{key[0]} · rl · {key[1]} · grader {key[2]}", tables, [("rl", g)]))
    return out


def runs_table(df: pd.DataFrame, diffs: dict[str, str]) -> pd.DataFrame:
    """One row per run: where and how it ran, and how its config differs within its group."""
    runs = df.groupby("run_id", sort=True).agg(task=("task", "first"), protocol=("protocol", "first"),
                                                model=("model", "first"), fingerprint=("model_fingerprint", "first"),
                                                grader=("grader", "first"),
                                                eval_set=("eval_set", lambda s: ", ".join(sorted(set(s)))),
                                                device=("device", "first"), written=("written", "first"))
    runs["config differs"] = [diffs.get(r) or DASH for r in runs.index]
    return runs.reset_index()


def grader_tables(df: pd.DataFrame, grader: str | None = None) -> list[tuple[str, pd.DataFrame]]:
    """Per run whose answers carry verdicts of two or more graders (`sealbench grade`): the run's
    grader against each other one (or only `grader`), per contender: answers, both accuracies (micro,
    %), agreement %, bias (points, other minus the run's) and mean answer words."""
    from ..regrade import agreement, run_graders

    out = []
    for run, folder in sorted((df.attrs.get("run_dirs") or {}).items()):
        if run not in set(df["run_id"]) or not (Path(folder) / "results.jsonl").exists():
            continue
        primary, graders = run_graders(Path(folder))
        for other in graders[1:]:
            if grader is not None and grader not in (primary, other):
                continue
            rows = agreement(Path(folder), primary, other)
            if not rows:
                continue
            rows.sort(key=lambda r: (r["contender"] == "all", order_key(r["contender"])))
            table = pd.DataFrame({
                "contender": [r["contender"] for r in rows], "answers": [str(r["answers"]) for r in rows],
                f"{primary} %": [f"{r[primary] * 100:.1f}" for r in rows],
                f"{other} %": [f"{r[other] * 100:.1f}" for r in rows],
                "agreement %": [f"{r['agreement'] * 100:.1f}" for r in rows],
                f"bias ({other} − {primary}, points)": [f"{r['bias'] * 100:+.1f}" for r in rows],
                "answer words": [f"{r['answer_words']:.1f}" for r in rows]})
            out.append((f"{run}: {primary} (the run's grader) vs {other}", table))
    return out


# ----------------------------------------------------------------------------------- plots
def draw(kind: str, rows: pd.DataFrame, plot_dir: Path, title: str) -> Path | None:
    """One figure of a group (kind: bars | cpt | forgetting | time | rl), or None."""
    path = plot_dir / f"{kind}_{_slug(title, *sorted(set(rows['run_id'])), *sorted(set(rows['contender'])))}.png"
    if kind == "bars":
        several = rows["run_id"].nunique() > 1
        entries = rows.assign(label=[f"{r.contender} · {r.run_id[-10:]}" if several else r.contender
                                     for r in rows.itertuples()])
        entries = entries.sort_values(["value", "label"], ascending=[False, True])
        return plots.bars(entries, path, title, entries["metric"].iloc[0]) if len(entries) else None
    if kind == "cpt":
        return plots.cpt_curve(rows, path, f"CPT scale — {title}")
    if kind == "forgetting":
        return plots.forgetting(rows, path, f"{rows['contender'].iloc[0]} · {rows['run_id'].iloc[0][-10:]}")
    if kind == "time":
        return plots.time_per_edit(rows, path, f"time per edit — {title}")
    return plots.rl_rounds(rows, path, f"SEAL RL rounds — {title}")


# ----------------------------------------------------------------------------------- compare
def compare(root: str | Path, out: str | Path | None = None, make_plots: bool = True,
            grader: str | None = None) -> dict:
    """Write the comparison of every finished run under `root`; return what was written:
    {md, html, csv: [paths], png: [paths], n_runs, skipped: [one line per folder not read]}.
    `grader`: only rows measured with it. Raises CompareError when `root` holds no finished run,
    ValueError when no run has that grader's verdicts."""
    root = Path(root)
    out = Path(out) if out else root / "compare"
    df, skipped = load_results([root])
    if df.empty:
        extra = f" ({len(skipped)} unfinished or old-format folder(s))" if skipped else ""
        raise CompareError(f"no finished runs under {root}{extra}: "
                           "run `sealbench run ...` (or `sealbench migrate`) first")
    df = select_grader(df, grader)
    from ..store import StoreError, _os_message

    before = set(out.rglob("*")) if out.is_dir() else set()
    made = [p for p in [out, *out.parents] if not p.exists()]
    try:
        return _write(df, root, out, skipped, make_plots, grader)
    except (OSError, StoreError) as err:  # a full disk or a read-only --out: one line, nothing left behind
        for p in sorted(set(out.rglob("*")) - before if out.is_dir() else [], key=lambda q: -len(q.parts)):
            try:
                p.rmdir() if p.is_dir() else p.unlink()
            except OSError:
                pass
        for p in made:
            try:
                p.rmdir()
            except OSError:
                pass
        raise CompareError(str(err) if isinstance(err, StoreError)
                           else _os_message(err, Path(err.filename or out), OUT_FIX)) from None


OUT_FIX = "pass --out a writable folder on another disk (e.g. --out /tmp/compare)"


def _write(df: pd.DataFrame, root: Path, out: Path, skipped: list[str], make_plots: bool, grader) -> dict:
    """compare's files (see `compare`); temp file then rename each, so none is half written."""
    from ..store import write_atomic

    out.mkdir(parents=True, exist_ok=True)
    write_atomic(out / "results.csv", csv_text(df.to_dict("records")), OUT_FIX)
    runs = runs_table(df, config_diffs(df))
    write_atomic(out / "runs.csv", runs.to_csv(index=False, lineterminator="\n"), OUT_FIX)
    n_runs = df["run_id"].nunique()
    md = [f"# sealbench comparison\n\n{n_runs} run(s) under `{root}`. Cells: mean [95% CI] (n unit); "
          f"fractions in percent, differences in points, times in seconds.\n", "## Runs\n", md_table(runs)]
    sections = []
    pngs = []
    for title, tables, figs in group_tables(df):
        md.append(f"## {title}\n")
        section = {"title": title, "intro": "", "tables": [], "figs": []}
        sections.append(section)
        for caption, table in tables:
            md.append(f"### {caption}\n\n{md_table(table)}")
            section["tables"].append((caption, Markup(html_table(table))))
        for kind, rows in figs if make_plots else []:
            path = draw(kind, rows, out / "plots", title) if not rows.empty else None
            if path is None:
                if not rows.empty and plots.all_zero(rows["value"]):
                    note = f"Every value is 0 here: no {KINDS[kind]} chart."
                    md.append(note + "\n")
                    section["figs"].append((note, None, None))
                continue
            rel, cap = path.relative_to(out).as_posix(), f"{KINDS[kind]}: {title}"
            pngs.append(str(path))
            md.append(f"![{cap}]({rel})\n")
            section["figs"].append((None, rel, cap))
    graded = grader_tables(df, grader)
    if graded:
        intro = ("Over the answers both graders judged; accuracy is micro (per answer); bias is the other "
                 "grader's accuracy minus the run's grader's, in points; answer words: mean words per answer.")
        md += ["## Graders compared\n", intro + "\n"]
        sections.append({"title": "Graders compared", "intro": intro, "figs": [],
                         "tables": [(caption, Markup(html_table(table))) for caption, table in graded]})
        for caption, table in graded:
            md.append(f"### {caption}\n\n{md_table(table)}")
    if skipped:
        md += ["## Not compared\n"] + [f"- {s}" for s in skipped] + [""]
    body = pages.render("compare.html.j2", n_runs=n_runs, root=str(root), runs=Markup(html_table(runs)),
                        sections=sections, skipped=skipped).rstrip("\n")
    write_atomic(out / "compare.md", "\n".join(md), OUT_FIX)
    write_atomic(out / "compare.html", page("sealbench comparison", body), OUT_FIX)
    return {"md": str(out / "compare.md"), "html": str(out / "compare.html"), "png": pngs, "n_runs": n_runs,
            "csv": [str(out / "results.csv"), str(out / "runs.csv")], "skipped": skipped}


def default_out(folder) -> str:
    """DIR/compare, unless DIR holds files committed to git (the committed run folders): then
    reports/compare-<DIR name>, so a comparison never leaves untracked files in a committed tree."""
    import subprocess

    try:
        tracked = subprocess.run(["git", "-C", str(folder), "ls-files", "--", "."], capture_output=True, text=True,
                                 timeout=30).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        tracked = ""
    return str(Path("reports") / f"compare-{Path(folder).resolve().name}") if tracked else str(Path(folder) / "compare")


def main(argv: list[str] | None = None) -> int:
    """`sealbench compare DIR [--out OUT] [--grader NAME] [--no-plots]`; exit 2 (one line) when DIR has no
    finished run or none with that grader."""
    p = argparse.ArgumentParser(prog="sealbench compare", description="Compare every finished run under DIR.")
    p.add_argument("dir", nargs="?", default="reports", metavar="DIR")
    p.add_argument("--out", default=None, help="output folder (default: DIR/compare; reports/compare-<DIR name> "
                                                 "when DIR holds files committed to git, e.g. benchmarks/results)")
    p.add_argument("--grader", default=None, metavar="NAME",
                   help="match | em | f1 | judge: only numbers measured with this grader (add a grader to a "
                        "finished run with `sealbench grade RUN_DIR --grader NAME`); default: every grader, "
                        "one group each")
    p.add_argument("--no-plots", action="store_true")
    args = p.parse_args(argv)
    out = args.out or default_out(args.dir)
    try:
        w = compare(args.dir, out, make_plots=not args.no_plots, grader=args.grader)
    except (CompareError, ValueError) as err:  # ValueError: a finished run's files are unreadable
        print(f"sealbench: error: {err}", file=sys.stderr)
        return 2
    for line in w["skipped"]:
        print(f"not compared: {line}", file=sys.stderr)
    print(f"compared {w['n_runs']} run(s): {w['md']}, {w['html']}, {len(w['png'])} PNG", file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
