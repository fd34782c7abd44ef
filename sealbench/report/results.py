"""The results table: one long table, one row per reported number, shared by every report.

A finished run folder holds `summary.jsonl` and `summary.csv` (the same rows, columns `COLUMNS` in
that order), `summary.md` (`run_markdown`), `manifest.json`, `config.json` and, written last, the
marker `COMPLETE` (the time and the number of unit rows of results.jsonl). A folder with `config.json` but no `COMPLETE` is unfinished; one with an
old-format `summary.json` but no `COMPLETE` needs `sealbench migrate`.

Row fields (see docs/reports.md for every metric):
    run_id, task, family (squad | arc), protocol (single | cpt | continual | rl), model,
    model_fingerprint, contender, role (contender | ceiling | reference), grader, eval_set,
    metric, at ("" for the headline, else "key=value[,key=value]"), value, ci_low, ci_high
    (floats, NaN where there is no interval; fractions 0..1 for accuracies, seconds for *_s),
    n (int) and unit (what n counts), vs and p_value (paired rows only), device, seed, written.
Rows are comparable only with the same task, protocol, model, grader and eval_set.
"""
from __future__ import annotations

import hashlib
import json
import math
import os
import re
from numbers import Integral, Real
from pathlib import Path

import pandas as pd

from ..families import PACKAGES, TASK_FAMILY  # each family declares its tasks (families/*/__init__.py)

COLUMNS = ("run_id", "task", "family", "protocol", "model", "model_fingerprint", "contender", "role",
           "grader", "eval_set", "metric", "at", "value", "ci_low", "ci_high", "n", "unit", "vs",
           "p_value", "device", "seed", "written")
FAMILIES, PROTOCOLS = tuple(PACKAGES), ("single", "cpt", "continual", "rl")
ROLES = ("contender", "ceiling", "reference")
UNITS = ("passages", "questions", "pairs", "tasks", "edits", "sequences", "items")
REQUIRED = ("run_id", "task", "protocol", "model", "contender", "grader", "eval_set", "metric", "value",
            "n", "unit")
DEFAULTS = {"model_fingerprint": "", "role": "contender", "at": "", "ci_low": math.nan,
            "ci_high": math.nan, "vs": "", "p_value": math.nan, "device": "", "seed": -1, "written": ""}
FLOATS, INTS = ("value", "ci_low", "ci_high", "p_value"), ("n", "seed")
STRINGS = tuple(c for c in COLUMNS if c not in FLOATS + INTS)
_AT = re.compile(r"^([A-Za-z_][\w.-]*=[^,=]+)(,[A-Za-z_][\w.-]*=[^,=]+)*$")

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
def make_row(**fields) -> dict:
    """One validated row, keys in `COLUMNS` order, defaults filled in.

    `family` defaults to the task's family (`TASK_FAMILY`). Raises ValueError naming the field
    when a field is unknown, a required one is missing, a type is wrong (value/ci/p_value: real
    numbers, NaN allowed; n/seed: ints) or an enumerated one (family, protocol, role, unit, at) is
    out of range.
    """
    unknown = sorted(set(fields) - set(COLUMNS))
    if unknown:
        raise ValueError(f"make_row: unknown field {unknown[0]!r}")
    for key in REQUIRED:
        if fields.get(key) is None or fields.get(key) == "":
            raise ValueError(f"make_row: missing required field {key!r}")
    row = {**DEFAULTS, **{k: v for k, v in fields.items() if v is not None}}
    row.setdefault("family", TASK_FAMILY.get(str(fields["task"]), ""))
    if not row["family"]:
        raise ValueError(f"make_row: field 'family' is required for task {fields['task']!r} (not in TASK_FAMILY)")
    for key in FLOATS:
        if isinstance(row[key], bool) or not isinstance(row[key], Real):
            raise ValueError(f"make_row: field {key!r} must be a number (NaN allowed), got {row[key]!r}")
        row[key] = float(row[key])
    for key in INTS:
        if isinstance(row[key], bool) or not isinstance(row[key], Integral):
            raise ValueError(f"make_row: field {key!r} must be an int, got {row[key]!r}")
        row[key] = int(row[key])
    for key in STRINGS:
        if not isinstance(row[key], str):
            raise ValueError(f"make_row: field {key!r} must be a string, got {row[key]!r}")
    for key, allowed in (("family", FAMILIES), ("protocol", PROTOCOLS), ("role", ROLES), ("unit", UNITS)):
        if row[key] not in allowed:
            raise ValueError(f"make_row: field {key!r} is {row[key]!r}, expected one of {', '.join(allowed)}")
    if row["n"] < 0:
        raise ValueError(f"make_row: field 'n' must be >= 0, got {row['n']}")
    if row["at"] and not _AT.match(row["at"]):
        raise ValueError(f"make_row: field 'at' must be '' or 'key=value[,key=value]', got {row['at']!r}")
    if not math.isnan(row["p_value"]) and not row["vs"]:
        raise ValueError("make_row: field 'vs' must name the other contender of a paired row with a p_value")
    return {k: row[k] for k in COLUMNS}


def eval_set_id(name: str, item_ids: list[str]) -> str:
    """`<name>-<count>-<8 hex of sha256 over the ids, one a line>`, e.g. seal-eval-200-3f9a1c2b.
    Families pass `<id>@<content digest>` so that the set's identity is its content (changed golds
    under the same ids are another set); folders written before 2026-12-02 hashed the ids alone."""
    digest = hashlib.sha256("\n".join(map(str, item_ids)).encode()).hexdigest()[:8]
    return f"{name}-{len(item_ids)}-{digest}"


def parse_at(at: str) -> dict[str, str]:
    """'after=3,item=1' -> {'after': '3', 'item': '1'}; '' -> {}."""
    return dict(part.split("=", 1) for part in at.split(",")) if at else {}


def rows_to_frame(rows) -> pd.DataFrame:
    """Rows (dicts, possibly read back from JSONL/CSV) as a DataFrame with exactly `COLUMNS`.

    Tolerant: missing optional columns get their defaults, None/NaN strings become "", numbers
    are coerced (unparseable -> NaN), n/seed are nullable Int64; extra columns are dropped.
    """
    df = pd.DataFrame.from_records(list(rows)) if not isinstance(rows, pd.DataFrame) else rows.copy()
    for col in COLUMNS:
        if col not in df.columns:
            df[col] = DEFAULTS.get(col, "" if col in STRINGS else math.nan)
    df = df.loc[:, list(COLUMNS)]
    for col in FLOATS:
        df[col] = pd.to_numeric(df[col], errors="coerce").astype("float64")
    for col in INTS:
        df[col] = pd.to_numeric(df[col], errors="coerce").round().astype("Int64")
    for col in STRINGS:
        df[col] = df[col].map(lambda v: "" if v is None or (isinstance(v, float) and math.isnan(v)) else str(v))
    missing_family = df["family"] == ""
    df.loc[missing_family, "family"] = df.loc[missing_family, "task"].map(lambda t: TASK_FAMILY.get(t, ""))
    return df.reset_index(drop=True)


def jsonl_text(rows) -> str:
    """summary.jsonl content: one JSON object a line, NaN written as null."""
    def clean(v):
        return None if isinstance(v, float) and math.isnan(v) else v
    return "".join(json.dumps({k: clean(r.get(k)) for k in COLUMNS}) + "\n" for r in rows)


def csv_text(rows) -> str:
    """summary.csv content: header `COLUMNS`, NaN/NA as empty cells, floats round-trip exactly."""
    return rows_to_frame(rows).to_csv(index=False, lineterminator="\n")


def read_run_rows(folder: Path) -> pd.DataFrame:
    """A run folder's rows from summary.jsonl (a torn last line is ignored), else summary.csv.
    Raises ValueError naming the file and line when a complete line is not JSON."""
    folder, rows = Path(folder), []
    if (folder / "summary.jsonl").exists():
        try:
            lines = (folder / "summary.jsonl").read_text(encoding="utf-8").split("\n")
        except UnicodeDecodeError as err:
            raise ValueError(f"{folder / 'summary.jsonl'} is not UTF-8 (byte {err.start}); delete it and COMPLETE "
                             "and re-run the run's command to rebuild it from results.jsonl") from None
        for i, line in enumerate(lines[:-1], 1):
            try:
                rows += [json.loads(line)] if line.strip() else []
            except json.JSONDecodeError as err:
                from ..store import reader_fix

                raise ValueError(f"{folder / 'summary.jsonl'}:{i}: not JSON ({err.msg}); "
                                 f"{reader_fix(folder / 'summary.jsonl')}") from None
        return rows_to_frame(rows)
    if (folder / "summary.csv").exists():
        try:
            return rows_to_frame(pd.read_csv(folder / "summary.csv", keep_default_na=False, na_values=[""]))
        except (UnicodeDecodeError, pd.errors.ParserError) as err:
            raise ValueError(f"{folder / 'summary.csv'} cannot be read ({str(err).splitlines()[0][:120]}); "
                             "delete the folder or re-run it") from None
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


def continual_rows(common: dict, mean: list, std: list | None, n_sequences: int,
                   zero_means_missing: bool = False) -> list[dict]:
    """A (K+1) x K forgetting matrix as rows: `accuracy` at after=k,item=j (value mean, CI mean ± std),
    `final_accuracy` (mean of the last row) and `forgetting` (mean of just-edited minus last row).
    None cells (or, with zero_means_missing, 0.0 above the diagonal) are not evaluated."""
    K = len(mean[0])
    def cell(i, j):
        v = mean[i][j]
        return None if v is None or (zero_means_missing and i >= 1 and j >= i) else float(v)
    out = []
    for i in range(K + 1):
        for j in range(K):
            if cell(i, j) is not None:
                sd = std[i][j] if std and std[i][j] is not None else math.nan
                out.append(make_row(**common, metric="accuracy", at=f"after={i},item={j}", value=cell(i, j),
                                    ci_low=cell(i, j) - sd, ci_high=cell(i, j) + sd, n=n_sequences,
                                    unit="sequences"))
    last = [cell(K, j) for j in range(K)]
    diag = [cell(j + 1, j) for j in range(K)]
    if all(v is not None for v in last):
        out.append(make_row(**common, metric="final_accuracy", value=sum(last) / K, n=n_sequences,
                            unit="sequences"))
        if all(v is not None for v in diag):
            out.append(make_row(**common, metric="forgetting", value=(sum(diag) - sum(last)) / K,
                                n=n_sequences, unit="sequences"))
    return out


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
