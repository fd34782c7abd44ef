"""The result row: one reported number. Every run folder's summary (summary.jsonl, summary.csv) is
a list of these, written by the families and the RL loop and read by every report, so the schema
lives here, below both (families and report/ import it; it reads only the families' declared facts,
families/*/__init__.py, which import nothing).

`ResultRow` (pydantic) declares each field once, with its type and meaning; `make_row` builds a
validated row as a plain dict in `COLUMNS` order (what the files and pandas hold). Versions of the
summary format (`SUMMARY_FORMAT`, recorded in a finished folder's COMPLETE marker):
    0  summary.json (before 2026-11): read only through `sealbench migrate` (report/migrate.py)
    1  summary.jsonl/summary.csv rows of `COLUMNS` (today; a COMPLETE without a format line is 1)
Rows are comparable only with the same task, protocol, model, grader and eval_set.
"""
from __future__ import annotations

import hashlib
import json
import math
import re
from numbers import Integral, Real
from typing import Annotated, Literal

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, ValidationError, field_validator, model_validator

from .families import PACKAGES, TASK_FAMILY  # the families' declared facts (names, tasks): no torch

SUMMARY_FORMAT = 1
_AT = re.compile(r"^([A-Za-z_][\w.-]*=[^,=]+)(,[A-Za-z_][\w.-]*=[^,=]+)*$")


def _real(v):
    """A real number (NaN allowed) as float; bools and strings are refused, not coerced."""
    if isinstance(v, bool) or not isinstance(v, Real):
        raise ValueError(f"must be a number (NaN allowed), got {v!r}")
    return float(v)


def _integer(v):
    """An integer (numpy's too) as int; bools, floats and strings are refused."""
    if isinstance(v, bool) or not isinstance(v, Integral):
        raise ValueError(f"must be an int, got {v!r}")
    return int(v)


def _text(v):
    if not isinstance(v, str):
        raise ValueError(f"must be a string, got {v!r}")
    return v


Num = Annotated[float, BeforeValidator(_real)]
Int = Annotated[int, BeforeValidator(_integer)]
Str = Annotated[str, BeforeValidator(_text)]
Required = Annotated[str, BeforeValidator(_text), Field(min_length=1)]


class ResultRow(BaseModel):
    """One reported number with its uncertainty, its n and where it came from (docs/reports.md
    lists every metric). Fractions are 0..1, differences in fractions, seconds for `*_s`."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    run_id: Required = Field(description="the run folder's id")
    task: Required = Field(description="the task, e.g. seal_squad_nocontext (registry)")
    family: Str = Field(description="the task's family (default: TASK_FAMILY[task]; families/*/__init__.py)")
    protocol: Literal["single", "cpt", "continual", "rl"] = Field(description="the evaluation protocol")
    model: Required = Field(description="the model's name")
    model_fingerprint: Str = Field("", description="sha256 prefix of the model's weights file")
    contender: Required = Field(description="the contender (base, passage, seal, ...)")
    role: Literal["contender", "ceiling", "reference"] = Field(
        "contender", description="contender, open-book ceiling, or a SEAL paper number")
    grader: Required = Field(description="the grader of the verdicts behind the number")
    eval_set: Required = Field(description="<name>-<count>-<digest> of the items (eval_set_id)")
    metric: Required = Field(description="what the number is (accuracy, seconds_per_edit, ...)")
    at: Str = Field("", description="'' for the headline, else key=value[,key=value] (N=50, round=2)")
    value: Num = Field(description="the number (NaN when undefined)")
    ci_low: Num = Field(math.nan, description="95% interval, low end (NaN: none)")
    ci_high: Num = Field(math.nan, description="95% interval, high end (NaN: none)")
    n: Int = Field(ge=0, description="how many `unit`s the number is over")
    unit: Literal["passages", "questions", "pairs", "tasks", "edits", "sequences", "items"] = Field(
        description="what n counts")
    vs: Str = Field("", description="the other contender of a paired row")
    p_value: Num = Field(math.nan, description="paired test's p value (NaN: not a paired row)")
    device: Str = Field("", description="the device's name")
    seed: Int = Field(-1, description="the run's seed (-1: none)")
    written: Str = Field("", description="when the row was written (ISO 8601, UTC)")

    @field_validator("family")
    @classmethod
    def _known_family(cls, family: str) -> str:
        if family not in PACKAGES:
            raise ValueError(f"must be one of {', '.join(PACKAGES)}, got {family!r}")
        return family

    @field_validator("at")
    @classmethod
    def _at_form(cls, at: str) -> str:
        if at and not _AT.match(at):
            raise ValueError(f"must be '' or 'key=value[,key=value]', got {at!r}")
        return at

    @model_validator(mode="after")
    def _paired(self):
        if not math.isnan(self.p_value) and not self.vs:
            raise ValueError("field 'vs' must name the other contender of a paired row with a p_value")
        return self


COLUMNS = tuple(ResultRow.model_fields)
REQUIRED = tuple(name for name, f in ResultRow.model_fields.items() if f.is_required() and name != "family")
DEFAULTS = {name: f.default for name, f in ResultRow.model_fields.items() if not f.is_required()}
FLOATS, INTS = ("value", "ci_low", "ci_high", "p_value"), ("n", "seed")
STRINGS = tuple(c for c in COLUMNS if c not in FLOATS + INTS)
FAMILIES, PROTOCOLS = tuple(PACKAGES), ("single", "cpt", "continual", "rl")
ROLES = ("contender", "ceiling", "reference")
UNITS = ("passages", "questions", "pairs", "tasks", "edits", "sequences", "items")


def make_row(**fields) -> dict:
    """One validated row (`ResultRow`) as a dict, keys in `COLUMNS` order, defaults filled in;
    None means the default. `family` defaults to the task's family (`TASK_FAMILY`).

    Raises ValueError naming the field ("make_row: field 'n' ...") when a field is unknown, a
    required one is missing or empty, a type is wrong (value/ci/p_value: real numbers, NaN
    allowed; n/seed: ints) or an enumerated one (family, protocol, role, unit, at) is out of range.
    """
    fields = {k: v for k, v in fields.items() if v is not None}
    unknown = sorted(set(fields) - set(COLUMNS))
    if unknown:
        raise ValueError(f"make_row: unknown field {unknown[0]!r}")
    for key in REQUIRED:
        if fields.get(key) in (None, ""):
            raise ValueError(f"make_row: missing required field {key!r}")
    if "family" not in fields:
        fields["family"] = TASK_FAMILY.get(str(fields["task"]), "")
        if not fields["family"]:
            raise ValueError(f"make_row: field 'family' is required for task {fields['task']!r} (not in TASK_FAMILY)")
    try:
        return ResultRow(**fields).model_dump()
    except ValidationError as err:
        first = err.errors()[0]
        field = first["loc"][0] if first["loc"] else None
        message = first["msg"].removeprefix("Value error, ")
        if field is None:  # a rule across fields: its message names them
            raise ValueError(f"make_row: {message}") from None
        got = "" if "got " in message else f" (got {fields.get(field)!r})"
        raise ValueError(f"make_row: field {field!r} {message}{got}") from None


def eval_set_id(name: str, item_ids: list[str]) -> str:
    """`<name>-<count>-<8 hex of sha256 over the ids, one a line>`, e.g. seal-eval-200-3f9a1c2b.
    Families pass `<id>@<content digest>` so that the set's identity is its content (changed golds
    under the same ids are another set); folders written before 2026-12-02 hashed the ids alone."""
    digest = hashlib.sha256("\n".join(map(str, item_ids)).encode()).hexdigest()[:8]
    return f"{name}-{len(item_ids)}-{digest}"


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


# ----------------------------------------------------------------------------------- files
def rows_to_frame(rows) -> "pd.DataFrame":  # noqa: F821
    """Rows (dicts, possibly read back from JSONL/CSV) as a DataFrame with exactly `COLUMNS`.

    Tolerant: missing optional columns get their defaults, None/NaN strings become "", numbers
    are coerced (unparseable -> NaN), n/seed are nullable Int64; extra columns are dropped.
    """
    import pandas as pd  # here: writing a unit's rows needs no pandas

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
