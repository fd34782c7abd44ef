"""The results table: one long table, one row per reported number, shared by every report.

A finished run folder holds `summary.jsonl` and `summary.csv` (the same rows, columns `COLUMNS` in
that order), `summary.md` (`run_markdown`), `manifest.json`, `config.json` and, written last, the
marker `COMPLETE` (the time and the number of unit rows of results.jsonl). A folder with `config.json` but no `COMPLETE` is unfinished; one with an
old-format `summary.json` but no `COMPLETE` needs `sealbench migrate`.

The row schema (`ResultRow`, `make_row`, the summary files' text) is sealbench/schema.py, below
the families that write rows and this package that reads them; it is re-exported here. This
module finds and reads run folders and shapes the rows for display.
"""
from __future__ import annotations

import json
import math
import os
import re
from pathlib import Path

import pandas as pd

from ..schema import (COLUMNS, DEFAULTS, FAMILIES, FLOATS, INTS, PROTOCOLS, REQUIRED, ROLES, STRINGS,  # noqa: F401
                      SUMMARY_FORMAT, TASK_FAMILY, UNITS, continual_rows, csv_text, eval_set_id, jsonl_text, make_row,
                      rows_to_frame)

# Display: fractions in percent, differences in signed points, seconds as they are.
FRACTIONS = {"accuracy", "micro_accuracy", "exact_match", "f1", "pairs_solved", "task_pass2",
             "task_any_edit", "test_inputs_solved", "final_accuracy", "heldout_accuracy",
             "reward_all", "reward_kept"}
DIFFS = {"accuracy_diff", "heldout_diff", "forgetting"}
TIMING = ("seconds_per_edit", "generate_s", "data_s", "train_s", "merge_s", "answer_s", "grade_s")
COST = TIMING + ("train_steps", "train_tokens", "peak_mem_mb", "failed_units")  # the time-per-edit table's columns
HEADLINE = {"squad": {"single": "accuracy", "cpt": "accuracy", "continual": "final_accuracy"},
            "arc": {"single": "pairs_solved"}}
ORDER = ("base", "passage", "self-notes", "teacher-notes", "icl", "ttt-self-edit", "oracle", "seal",
         "in-context")
FIRST = ("accuracy", "final_accuracy", "pairs_solved", "forgetting", "heldout_accuracy", "reward_all",
         "reward_kept")  # results tables: these metric columns first
ROLE_LABEL = {"ceiling": "open-book ceiling", "reference": "SEAL paper"}
DASH = "–"
REFERENCE_FILE = Path("reference") / "seal_reference_results.json"


# ----------------------------------------------------------------------------------- rows
def parse_at(at: str) -> dict[str, str]:
    """'after=3,item=1' -> {'after': '3', 'item': '1'}; '' -> {}."""
    return dict(part.split("=", 1) for part in at.split(",")) if at else {}


def read_run_rows(folder: Path) -> pd.DataFrame:
    """A run folder's rows from summary.jsonl, else summary.csv. Every summary.jsonl line is
    checked against the row schema (schema.ResultRow; null stands for NaN). summary.jsonl is
    written whole (atomically), so a line that is not a valid row, the last one included, raises
    ValueError naming the file, the line, what is wrong and the fix."""
    from ..store import reader_fix, summary_format

    folder, rows = Path(folder), []
    summary_format(folder)  # raises for a format this version does not read
    path = folder / "summary.jsonl"
    if path.exists():
        try:
            lines = path.read_text(encoding="utf-8").split("\n")
        except UnicodeDecodeError as err:
            raise ValueError(f"{path} is not UTF-8 (byte {err.start}); delete it and COMPLETE "
                             "and re-run the run's command to rebuild it from results.jsonl") from None
        for i, line in enumerate(lines, 1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
                if not isinstance(row, dict):
                    raise ValueError(f"a JSON {type(row).__name__}, not a row object")
                rows.append(make_row(**{k: math.nan if v is None and k in FLOATS else v for k, v in row.items()}))
            except json.JSONDecodeError as err:
                raise ValueError(f"{path}:{i}: not JSON ({err.msg}); {reader_fix(path)}") from None
            except ValueError as err:
                raise ValueError(f"{path}:{i}: not a result row ({str(err).removeprefix('make_row: ')}); "
                                 f"{reader_fix(path)}") from None
        return rows_to_frame(rows)
    if (folder / "summary.csv").exists():
        try:
            return rows_to_frame(pd.read_csv(folder / "summary.csv", keep_default_na=False, na_values=[""]))
        except (UnicodeDecodeError, pd.errors.ParserError) as err:
            raise ValueError(f"{folder / 'summary.csv'} cannot be read ({str(err).splitlines()[0][:120]}); "
                             "delete the folder or re-run it") from None
    if (folder / "COMPLETE").is_file():  # finished, but its table is gone: say so, not "no runs"
        raise ValueError(f"{folder} is finished (COMPLETE) but has neither summary.jsonl nor summary.csv; "
                         f"{reader_fix(path)}")
    return rows_to_frame([])


# ----------------------------------------------------------------------------------- folders
def find_run_dirs(root: Path) -> list[Path]:
    """Run folders at any depth under `root` (or `root` itself), finished or not, sorted.

    A run folder holds COMPLETE, config.json, summary.jsonl or summary.json; the walk does not
    descend into run folders or hidden folders. A missing root gives [].
    """
    root = Path(root)
    markers = ("COMPLETE", "config.json", "summary.jsonl", "summary.json")
    found = []
    for here, dirs, files in os.walk(root):
        if any(m in files for m in markers):
            found.append(Path(here))
            dirs[:] = []
        else:
            dirs[:] = sorted(d for d in dirs if not d.startswith("."))
    return sorted(found)


ANSWER_GRADERS = ("match", "em", "f1", "judge")   # graders of stored answers (`sealbench grade`)


def answer_grader(grader: str) -> str:
    """The grader a results-table row's `grader` names: `match` for `match` and for `match@legacy`
    (an older version's rows that `sealbench grade` kept when it replaced them)."""
    return str(grader).split("@", 1)[0]


def select_grader(df: pd.DataFrame, grader: str | None) -> pd.DataFrame:
    """Rows measured with `grader` (None: every grader's rows). Rows of graders that do not grade
    stored answers (ARC's exact-grid, the SEAL paper's judge) are kept. Raises ValueError with
    the fix when no row has that grader."""
    if grader is None or df.empty:
        return df
    if answer_grader(grader) not in ANSWER_GRADERS:
        raise ValueError(f"--grader {grader!r} is not one of {', '.join(ANSWER_GRADERS)}; pick one of them")
    if not (df["grader"] == grader).any():
        raise ValueError(f"no finished run has verdicts of grader {grader!r}: add them with "
                         f"`sealbench grade <run folder> --grader {grader}`, or leave --grader out")
    out = df[(df["grader"] == grader) | ~df["grader"].map(answer_grader).isin(ANSWER_GRADERS)]
    out.attrs = dict(df.attrs)
    return out


def load_results(roots: list[Path]) -> tuple[pd.DataFrame, list[str]]:
    """(all rows of every finished run under `roots`, one line per folder that was not read).

    Not read: unfinished folders (listed by their path relative to the root) and old-format
    folders (`<path>: old format, run `sealbench migrate <root>``). A root that does not exist (or
    is a file) is a ValueError naming it. Rows repeated in several
    roots are kept once. `df.attrs["run_dirs"]` maps run_id -> folder (for config.json).
    """
    frames, skipped, seen, run_dirs = [], [], set(), {}
    for root in map(Path, roots):
        if not root.exists():  # a typo is not "no finished runs"
            raise ValueError(f"{root} does not exist; pass a folder that holds run folders (e.g. reports/)")
        if not root.is_dir():
            raise ValueError(f"{root} is a file, not a folder; pass a folder that holds run folders (e.g. reports/)")
        for folder in find_run_dirs(root):
            if folder.resolve() in seen:
                continue
            seen.add(folder.resolve())
            name = folder.relative_to(root).as_posix() if folder != root else folder.name
            if (folder / "COMPLETE").exists():
                from ..store import short_results

                short = short_results(folder)
                if short:  # its table would be read as if the run's rows were all there
                    raise ValueError(short)
                df = read_run_rows(folder)
                df.loc[df["run_id"] == "", "run_id"] = folder.name
                frames.append(df)
                run_dirs.update({rid: str(folder) for rid in df["run_id"].unique()})
            elif (folder / "summary.json").exists():
                skipped.append(f"{name}: old format, run `sealbench migrate {root}`")
            else:
                skipped.append(f"{name}: {_why_unfinished(folder)}")
    df = rows_to_frame(pd.concat(frames, ignore_index=True) if frames else [])
    df = df.drop_duplicates(["run_id", "contender", "role", "grader", "eval_set", "metric", "at", "vs"])
    df = df.reset_index(drop=True)
    df.attrs["run_dirs"] = run_dirs
    return df, skipped


def _why_unfinished(folder: Path) -> str:
    """Why a run folder has no results table: what it holds, and how to finish it."""
    rounds = sorted(p.name for p in folder.glob("round_*") if p.is_dir())
    if rounds:
        return (f"SEAL RL run without COMPLETE ({len(rounds)} round folder(s): {', '.join(rounds)}); its "
                "policy is read by runs, it has no results table to rank")
    results = folder / "results.jsonl"
    try:
        n = sum(1 for line in results.open() if line.strip()) if results.exists() else 0
    except OSError:
        n = 0
    return (f"unfinished: no COMPLETE ({n} unit row(s) in results.jsonl; the run was stopped before every "
            "unit had a row: re-run its command to finish it)")


def fmt_p(p: float) -> str:
    """'p<0.001', 'p=0.004', 'p=0.04': never 'p=0.00' for a p-value that is small but not zero."""
    if p < 0.001:
        return "p<0.001"
    return f"p={p:.3f}" if p < 0.01 else f"p={p:.2f}"


# ----------------------------------------------------------------------------------- reference
REF_MODEL, REF_GRADER, REF_EVAL_SET = "Qwen2.5-7B (SEAL paper)", "gpt-4.1-judge", "seal-eval-200-paper"
SINGLE_REF = {"base_model": "base", "train_on_passage": "passage", "passage_plus_self_notes": "self-notes",
              "passage_plus_gpt-4.1_notes": "teacher-notes", "seal": "seal"}
# LoRA CPT (n=200) summaries are keyed by whose notes were trained on: the base model's own notes,
# GPT-4.1's, the RL round-2 policy's; `naive` (the passage alone) is published with gain 0.0.
CPT_REF = {"base": "self-notes", "gpt4_1": "teacher-notes", "iter2": "seal", "naive": "passage"}


def reference_path(data_dir: str | os.PathLike | None = None) -> Path:
    """data_dir, else $SEALBENCH_DATA_DIR, else the checkout's ../shared/data; + reference file."""
    base = data_dir or os.environ.get("SEALBENCH_DATA_DIR") or Path(__file__).resolve().parents[3] / "shared" / "data"
    return Path(base).expanduser() / REFERENCE_FILE


def reference_rows(data_dir: str | os.PathLike | None = None) -> list[dict]:
    """SEAL's published numbers as rows with role `reference` ([] when the file is missing).

    Model "Qwen2.5-7B (SEAL paper)", grader "gpt-4.1-judge", eval_set "seal-eval-200-paper";
    single n=1 accuracies (n=200 passages), LoRA CPT at N=200 (adapter accuracy per notes source
    `CPT_REF`, plus the base model's accuracy as `base`), and the continual matrix of the RL
    policy (`seal`: cells at after=k,item=j as mean with mean ± std, final_accuracy, forgetting;
    n=64 sequences; SEAL's 0.0 above the diagonal means "not evaluated" and is skipped).
    Raises ValueError when the file exists but is not JSON.
    """
    path = reference_path(data_dir)
    if not path.exists():
        return []
    try:
        ref = json.loads(path.read_text())
    except json.JSONDecodeError as err:
        raise ValueError(f"{path}: not JSON ({err})") from err
    common = dict(run_id="seal-paper", task="seal_squad_nocontext", model=REF_MODEL, role="reference",
                  grader=REF_GRADER, eval_set=REF_EVAL_SET)
    rows = [make_row(**common, protocol="single", contender=SINGLE_REF.get(k, k), metric="accuracy",
                     value=v, n=200, unit="passages")
            for k, v in (ref.get("knowledge_single_passage_n1") or {}).items()]
    cpt = ref.get("knowledge_cpt_n200_lora") or {}
    if "baseline_accuracy" in (cpt.get("base") or {}):
        rows.append(make_row(**common, protocol="cpt", contender="base", metric="accuracy", at="N=200",
                             value=cpt["base"]["baseline_accuracy"], n=200, unit="passages"))
    rows += [make_row(**common, protocol="cpt", contender=CPT_REF.get(k, k), metric="accuracy", at="N=200",
                      value=v["adapter_accuracy"], n=200, unit="passages")
             for k, v in cpt.items() if isinstance(v, dict) and "adapter_accuracy" in v]
    cont = ref.get("continual") or {}
    mean, std, s = cont.get("mean_over_sequences"), cont.get("std_over_sequences"), int(cont.get("n_sequences") or 0)
    if mean:
        rows += continual_rows(dict(common, protocol="continual", contender="seal"), mean, std, s,
                               zero_means_missing=True)
    return rows


# ----------------------------------------------------------------------------------- display
def fmt_number(metric: str, x: float) -> str:
    """One number as shown: fractions in percent (47.0), differences in signed points (+3.1),
    seconds with 2 decimals, counts with thousands separators."""
    if metric in FRACTIONS:
        return f"{x * 100:.1f}"
    if metric in DIFFS:
        return f"{x * 100:+.1f}"
    if metric in TIMING or metric.endswith("_s"):
        return f"{x:.2f}" if abs(x) < 100 else f"{x:,.0f}"
    if metric == "answer_words":
        return f"{x:.1f}"
    return f"{x:,.0f}" if abs(x) >= 100 else f"{x:.3g}"


def cell_text(row, with_n: bool = True) -> str:
    """'47.0 [41.2, 52.9] (200 passages)'; '+3.1 [-1.0, 7.2] p=0.04 (200 passages)'; '–' for NaN."""
    value = row["value"]
    if value is None or pd.isna(value):
        return DASH
    text = fmt_number(row["metric"], value)
    if pd.notna(row["ci_low"]) and pd.notna(row["ci_high"]):
        text += f" [{fmt_number(row['metric'], row['ci_low'])}, {fmt_number(row['metric'], row['ci_high'])}]"
    if pd.notna(row["p_value"]):
        text += f" {fmt_p(row['p_value'])}"
    if with_n and pd.notna(row["n"]):
        unit = row["unit"][:-1] if row["n"] == 1 and row["unit"].endswith("s") else row["unit"]
        text += f" ({row['n']} {unit})"
    return text


def label(row) -> str:
    """The contender's name, with its role when it is not ranked ('in-context (open-book ceiling)')."""
    return f"{row['contender']} ({ROLE_LABEL[row['role']]})" if row["role"] in ROLE_LABEL else row["contender"]


def order_key(name: str) -> tuple:
    """Sort contenders in the usual order (base ... seal, then ARC's), unknown names last."""
    base = name.split(" (")[0]
    return (ORDER.index(base) if base in ORDER else len(ORDER), name)


def wide(df: pd.DataFrame, index: list[str], columns: list[str], cell=cell_text,
         first: tuple = ()) -> pd.DataFrame:
    """Pivot rows into a table of formatted cells ('–' where missing): `index` columns, then one
    column per value of `columns` (those named in `first` in that order, the rest sorted).
    Index columns that are empty in every row (e.g. `at`) are dropped."""
    if df.empty:
        return pd.DataFrame()
    table = (df.assign(_cell=[cell(r) for _, r in df.iterrows()])
             .pivot_table(index=index, columns=columns, values="_cell", aggfunc="first", fill_value=DASH))
    names = [" ".join(str(p) for p in c if p != "").strip() if isinstance(c, tuple) else str(c)
             for c in table.columns]
    table.columns = names
    table = table[sorted(names, key=lambda c: (first.index(c) if c in first else len(first), c))].reset_index()
    return table[[c for c in table.columns if c not in index or (table[c] != "").any()]]


def md_table(df: pd.DataFrame) -> str:
    """GitHub Markdown via pandas/tabulate, cells kept as text (no number re-parsing)."""
    if df.empty:
        return ""
    return df.astype(str).replace(r"\|", r"\\|", regex=True).to_markdown(index=False, disable_numparse=True) + "\n"


def headline(df: pd.DataFrame) -> pd.DataFrame:
    """The number each (run, contender) is ranked by: `HEADLINE[family][protocol]` at at=="",
    except cpt: accuracy at the run's largest N. Other protocols (rl) have no headline."""
    metric = [HEADLINE.get(f, {}).get(p, "") for f, p in zip(df["family"], df["protocol"])]
    rows = df[(df["metric"] == pd.Series(metric, index=df.index)) & (df["vs"] == "")].copy()
    rows["_n"] = rows["at"].map(lambda a: int(parse_at(a).get("N", "-1")) if "N=" in a else -1)
    cpt = rows["protocol"] == "cpt"
    largest = rows[cpt].groupby("run_id")["_n"].transform("max")
    keep = (~cpt & (rows["at"] == "")) | (cpt & (rows["_n"] == largest.reindex(rows.index)))
    return rows[keep].drop(columns="_n")


def run_markdown(rows) -> str:
    """summary.md of one run: per (task, protocol) the contenders' headline metrics (percent,
    95% CI, n beside every number), paired differences, forgetting matrices and timings."""
    df = rows_to_frame(rows)
    out = []
    for (task, protocol, _), g in df.groupby(["task", "protocol", "grader"], sort=True):
        first, sets = g.iloc[0], ", ".join(f"`{e}`" for e in sorted(g["eval_set"].unique()))
        out.append(f"## {task} · {protocol} · {first['model']} · grader {first['grader']}\n\n"
                   f"run `{first['run_id']}`, eval set {sets}, device {first['device'] or DASH}\n")
        g = g.assign(contender=[label(r) for _, r in g.iterrows()])
        matrix = g["at"].str.contains("after=")
        timing = g["metric"].isin(COST)
        paired = g["vs"] != ""
        main = g[~matrix & ~timing & ~paired]
        tables = [("results", wide(main, ["at"] if protocol == "rl" else ["contender", "at"], ["metric"],
                                   first=FIRST)),
                  ("paired differences (points)", wide(g[paired], ["contender", "vs", "at"], ["metric"])),
                  ("time per edit (median [IQR] seconds)",
                   wide(g[timing], ["contender", "at"], ["metric"], first=COST))]
        for name, cells in g[matrix].groupby("contender"):
            tables.append((f"forgetting matrix: {name} (mean ± std, row = after edit k)", matrix_table(cells)))
        for title, table in tables:
            if not table.empty:
                out.append(f"### {title}\n\n{md_table(sort_table(table))}")
    return "\n".join(out)


def matrix_table(cells: pd.DataFrame) -> pd.DataFrame:
    """Continual cells (at after=k,item=j) as a matrix: rows 'after k', columns 'item j', 'm ± s'."""
    pos = cells["at"].map(parse_at)
    def text(r):
        return f"{r['value'] * 100:.1f} ± {(r['ci_high'] - r['value']) * 100:.1f}" if pd.notna(r["ci_high"]) \
            else f"{r['value'] * 100:.1f}"
    m = cells.assign(after=pos.map(lambda p: int(p["after"])), item=pos.map(lambda p: int(p["item"])))
    table = m.assign(_c=[text(r) for _, r in m.iterrows()]).pivot_table(
        index="after", columns="item", values="_c", aggfunc="first", fill_value=DASH)
    table.columns = [f"item {c}" for c in table.columns]
    return table.reset_index().rename(columns={"after": "after edit"})


def natural(text: str) -> tuple:
    """Sort key that orders 'N=2' before 'N=10'."""
    return tuple(int(p) if p.isdigit() else p for p in re.split(r"(\d+)", str(text)))


def sort_table(table: pd.DataFrame) -> pd.DataFrame:
    """A `wide` table's rows by contender (usual order), then `at` in natural order."""
    if table.empty or "contender" not in table:
        return table
    keys = [(order_key(c), natural(a)) for c, a in zip(table["contender"], table.get("at", [""] * len(table)))]
    return table.iloc[sorted(range(len(table)), key=keys.__getitem__)]
