"""Grading over stored answers: graders are not part of what is trained.

A knowledge unit's key covers what determines its answers (model, procedure, items, self-edits,
training and answer settings), not the grader (families/squad/protocols.py). Every question of a
unit row keeps its raw and cut answer, and its verdicts by grader:

    {"question": ..., "golds": [...], "raw": ..., "prediction": ...,
     "correct": true, "reason": "...",                 # the run's grader (what older readers read)
     "verdicts": {"match": {"correct": true, "reason": "...", "version": "match-1a2b3c4d5e"},
                  "em": {"correct": false, "reason": "no exact match", "version": "em-..."}},
     "em": 0.0, "f1": 0.4}

and the row names the run's grader (`grader`). `sealbench grade RUN_DIR --grader NAME` adds a
grader's verdicts to a finished run folder and its results table (rows with `grader` = NAME beside
the run's own), loading no model and training nothing; a second call is a no-op. A run that reuses
a unit graded by another grader grades its stored answers with its own (`ensure`).

A grader's `version` is a hash of its code (its module and the modules it reads) and options, so a
verdict of an older rule set is recognised and redone; verdicts written before verdicts were stored
carry `legacy@<git commit>` (report/migrate.py). `sealbench grade` keeps the verdicts it replaces
(and that grader's results-table rows) under `<name>@legacy` / `<name>@<old hash>`
(`superseded_name`); the leaderboard ranks no such superseded grader.
"""
from __future__ import annotations

import hashlib
import json
import sys
from functools import lru_cache
from pathlib import Path
from types import SimpleNamespace

from .stats import answer_words
from .store import (COMPLETE, RESULTS, StoreError, read_rows, reader_fix, short_results, summary_format,
                    write_atomic)

GRADING_DIR = Path(__file__).resolve().parent / "grading"
# The modules each grader's verdicts depend on (besides the one that defines its class); `match`
# reads every rule module of the package (all but the registry, the judge and calibration).
_NOT_RULES = {"__init__.py", "calibration.py", "judge.py"}
_READS = {"em": ("metrics.py", "answers.py", "base.py"), "f1": ("metrics.py", "answers.py", "base.py"),
          "judge": ("answers.py", "base.py")}


def _reads(name: str) -> tuple[str, ...]:
    if name in _READS:
        return _READS[name]
    return tuple(sorted(p.name for p in GRADING_DIR.glob("*.py") if p.name not in _NOT_RULES))


class RegradeError(ValueError):
    """A run folder that cannot be (re)graded; one line naming the folder or row and the fix."""


def grader_version(grader) -> str:
    """`<name>-<10 hex>`: a hash of the grader's code and its plain options."""
    import inspect

    name = grader.name
    files = {Path(inspect.getsourcefile(type(grader))).name, *_reads(name)}
    opts = {k: v for k, v in sorted(vars(grader).items()) if isinstance(v, (str, int, float, bool)) and
            not k.startswith("_") and "key" not in k.lower()}
    return f"{name}-{_code_hash(tuple(sorted(files)), json.dumps(opts, sort_keys=True))}"


@lru_cache(maxsize=None)
def _code_hash(files: tuple, opts: str) -> str:
    h = hashlib.sha256(opts.encode())
    for f in files:
        path = GRADING_DIR / f
        h.update(f.encode() + (path.read_bytes() if path.exists() else b""))
    return h.hexdigest()[:10]


def graded_rows(row: dict) -> bool:
    """Whether a unit row holds gradable questions (knowledge single/cpt rows)."""
    return isinstance(row.get("questions"), list)


def stamp(rows: list[dict], grader) -> list[dict]:
    """Fresh rows graded by `grader` (the run's): copy each question's verdict into `verdicts`
    and name the grader on the row. Rows without questions (continual, ARC) are left alone."""
    version = grader_version(grader)
    for row in rows:
        if not graded_rows(row):
            continue
        row["grader"] = grader.name
        for q in row["questions"]:
            if "correct" in q:
                q.setdefault("verdicts", {})[grader.name] = {"correct": bool(q["correct"]),
                                                             "reason": q.get("reason", ""), "version": version}
    return rows


def superseded_name(name: str, version: str) -> str:
    """Where `sealbench grade` keeps a grader's verdicts (and results-table rows) of an older
    version when a newer version of the same grader replaces them: `match@legacy` for verdicts
    stored before verdicts carried a code hash (`legacy@<git commit>`), else `match@<old hash>`."""
    version = str(version or "")
    return f"{name}@legacy" if version.startswith("legacy") else f"{name}@{version.rsplit('-', 1)[-1] or 'old'}"


def is_superseded(grader: str) -> bool:
    """A grader name written by `superseded_name` (an older version of a grader, kept for the record)."""
    return "@" in str(grader)


def grade_row(row: dict, grader, primary: bool, version: str | None = None,
              keep_old: bool = False) -> tuple[dict, int]:
    """A copy of `row` with `grader`'s verdict on every question (kept when one of this version is
    there, else graded from the stored question, golds and prediction). `primary`: the grader is
    the run's, so the top-level `correct`/`reason`/`accuracy` and `grader` follow it. `keep_old`: a
    verdict of another version that is replaced is kept under `superseded_name` (`sealbench grade`).
    Returns (row, number of questions graded now)."""
    version = version or grader_version(grader)
    row = json.loads(json.dumps(row))
    graded = 0
    for q in row.get("questions") or []:
        v = (q.get("verdicts") or {}).get(grader.name)
        if not v or v.get("version") != version:
            if v and keep_old:
                q["verdicts"].setdefault(superseded_name(grader.name, v.get("version")), v)
            verdict = grader.grade(q["question"], q["golds"], q.get("prediction"))
            v = {"correct": bool(verdict.correct), "reason": verdict.reason, "version": version}
            q.setdefault("verdicts", {})[grader.name] = v
            graded += 1
        if primary:
            q["correct"], q["reason"] = v["correct"], v["reason"]
    if primary and row.get("questions"):
        row["grader"] = grader.name
        row["accuracy"] = sum(float(q["correct"]) for q in row["questions"]) / len(row["questions"])
    return row, graded


def ensure(row: dict, grader) -> dict:
    """A reused row as the run's grader sees it (nothing trained or generated)."""
    if not graded_rows(row):
        return row
    return grade_row(row, grader, primary=True)[0]


def as_graded_by(row: dict, name: str) -> dict:
    """A view of `row` whose top-level verdicts are `name`'s (for summarizing that grader)."""
    if not graded_rows(row):
        return row
    row = {**row, "questions": [{**q, **{k: q["verdicts"][name][k] for k in ("correct", "reason")}}
                                for q in row["questions"]]}
    row["accuracy"] = sum(float(q["correct"]) for q in row["questions"]) / max(len(row["questions"]), 1)
    return row


def run_graders(folder: Path) -> tuple[str, list[str]]:
    """(the run's grader, every grader with verdicts in its results.jsonl, the run's first)."""
    try:
        primary = json.loads((Path(folder) / "config.json").read_text()).get("grader") or "match"
    except (OSError, ValueError):
        primary = "match"
    seen: dict[str, None] = {primary: None}
    for r in _latest(Path(folder) / RESULTS) if (Path(folder) / RESULTS).exists() else []:
        for q in r.get("questions") or []:
            seen.update(dict.fromkeys(q.get("verdicts") or {}))
    return primary, list(seen)


def agreement(folder: Path, a: str, b: str) -> list[dict]:
    """Per contender (then all), over the answers both graders judged: answers, accuracy by `a`
    and by `b` (micro, fractions), agreement (fraction of equal verdicts), bias (b - a) and mean
    answer words. Reads results.jsonl only."""
    per: dict[str, list[tuple[bool, bool, float]]] = {}
    for r in _latest(Path(folder) / RESULTS):
        if r.get("status") != "ok":
            continue
        for q in r.get("questions") or []:
            v = q.get("verdicts") or {}
            if a in v and b in v:
                per.setdefault(r.get("contender", ""), []).append(
                    (bool(v[a]["correct"]), bool(v[b]["correct"]), answer_words([q])[0]))
    out = []
    for name, xs in list(per.items()) + ([("all", [x for v in per.values() for x in v])] if len(per) > 1 else []):
        n = len(xs)
        acc_a, acc_b = sum(x[0] for x in xs) / n, sum(x[1] for x in xs) / n
        out.append({"contender": name, "answers": n, a: acc_a, b: acc_b,
                    "agreement": sum(x[0] == x[1] for x in xs) / n, "bias": acc_b - acc_a,
                    "answer_words": sum(x[2] for x in xs) / n})
    return out


# ----------------------------------------------------------------------------------- a run folder
def _latest(path: Path) -> list[dict]:
    rows = read_rows(path, fix=reader_fix(path))
    last = {}
    for r in rows:
        last[r.get("key")] = r
    return list(last.values())


def plan_from_rows(cfg: dict, rows: list[dict]) -> tuple[list, dict]:
    """The run's plan rebuilt from config.json and its unit rows, in the planner's order
    (families/squad/protocols.py), for summarizing without loading data or a model: units are
    (key, contender spec, items by id, info). Returns (units, rows by key)."""
    from .config import ContenderSpec
    from .families.base import Unit

    specs = [ContenderSpec.model_validate(s) for s in cfg.get("contender_specs") or []]
    ids = [str(i) for i in cfg.get("item_ids") or []]
    item = {i: SimpleNamespace(id=i) for i in ids}
    by = {}
    for r in rows:
        if "n" in r and r.get("n") is not None and "passage_id" not in r:
            by[(r.get("contender"), "n", int(r["n"]))] = r
        else:
            by[(r.get("contender"), r.get("passage_id"), int(r.get("edit_index") or 0))] = r
    units, keyed = [], {}

    def add(c, where, items, info):
        r = by.get((c.name, *where))
        if r is None:
            raise RegradeError(f"no row for unit {c.name} {info} (the folder is not finished); run it again")
        units.append(Unit(r["key"], c, items, [], info))
        keyed[r["key"]] = r

    protocol = cfg.get("protocol", "single")
    if protocol == "single":
        for pid in ids:
            for c in specs:
                for e in range(c.edits_per_item):
                    add(c, (pid, e), [item[pid]], {"passage_id": pid, "edit_index": e})
    elif protocol == "cpt":
        for c in specs:
            if not c.adapt:
                for pid in ids:
                    add(c, (pid, 0), [item[pid]], {"passage_id": pid, "edit_index": 0})
                continue
            for n in cfg.get("cpt_n") or []:
                add(c, ("n", int(n)), [item[i] for i in ids[:n]], {"n": n})
    else:
        raise RegradeError(f"a {protocol} run keeps no questions per answer, so it cannot be regraded; "
                           "run it again with --grader NAME")
    return units, keyed


def summarize_for(cfg: dict, rows: list[dict], name: str, common: dict) -> list[dict]:
    """The knowledge results table of a finished run as grader `name` sees it."""
    from .families.squad import metrics

    plan, keyed = plan_from_rows(cfg, rows)
    config = SimpleNamespace(protocol=cfg.get("protocol", "single"), seed=int(cfg.get("seed") or 0),
                             cpt_n=list(cfg.get("cpt_n") or []))
    return metrics.summarize(config, plan, {k: as_graded_by(r, name) for k, r in keyed.items()},
                             {**common, "grader": name})


def grade_run(folder: Path, grader_name: str, say=print) -> str:
    """`sealbench grade RUN_DIR --grader NAME`: add NAME's verdicts to a finished knowledge run
    (results.jsonl) and NAME's rows to its results table. Returns 'graded' or 'up to date'.
    Raises RegradeError / StoreError / GraderError with one line; on any error nothing is written."""
    from filelock import FileLock, Timeout

    from .grading import GraderError, get_grader
    from .report.results import run_markdown
    from .schema import csv_text, jsonl_text

    grader = get_grader(grader_name)
    folder = Path(folder)
    if not folder.is_dir():
        raise RegradeError(f"{folder} is not a run folder; pass reports/<run-id>")
    if not any((folder / m).exists() for m in (COMPLETE, "config.json", "summary.json")):
        inside = [p.parent.name for p in sorted(folder.glob("*/config.json"))[:3]]
        hint = f" (it holds run folders, e.g. {folder / inside[0]}: pass one of them)" if inside else ""
        raise RegradeError(f"{folder} is not a run folder (no config.json or COMPLETE){hint}; pass "
                           "reports/<run-id>, a folder that `sealbench run` finished")
    if (folder / COMPLETE).is_file():
        try:
            summary_format(folder)
        except ValueError as err:
            raise RegradeError(str(err)) from None
    if not (folder / COMPLETE).exists():
        raise RegradeError(f"{folder} is not finished (no COMPLETE); finish it with `sealbench run` first "
                           f"(or `sealbench migrate` for an old folder)")
    try:
        cfg = json.loads((folder / "config.json").read_text())
    except (OSError, ValueError) as err:
        raise RegradeError(f"{folder}/config.json cannot be read ({err}); pass a run folder") from None
    short = short_results(folder)
    if short:
        raise RegradeError(short)
    if cfg.get("task") != "seal_squad_nocontext" and "kind" not in cfg:
        raise RegradeError(f"{folder} is a {cfg.get('task')} run: only knowledge (seal_squad_nocontext) "
                           "answers are graded by match|em|f1|judge")
    if "kind" in cfg:
        raise RegradeError(f"{folder} is a SEAL RL folder: its rewards are part of what was trained; "
                           "grade the knowledge runs that use its policy")
    if cfg.get("protocol") not in ("single", "cpt"):
        raise RegradeError(f"{folder} is a {cfg.get('protocol')} run: its rows keep predictions by position and "
                           f"the graded matrix, not each question, so they cannot be regraded; run it again "
                           f"with --grader {grader.name}")
    if "contender_specs" not in cfg or "item_ids" not in cfg:
        raise RegradeError(f"{folder} was written by an older sealbench (config.json has no contender_specs/"
                           f"item_ids, its answers no passage ids): run it again with --grader {grader.name}")
    version = grader_version(grader)
    primary = grader.name == (cfg.get("grader") or "match")
    if _up_to_date(folder, grader.name, version):  # a second call only reads: no lock (a read-only folder is fine)
        say(f"up to date {folder} ({grader.name}: every answer already has its verdict, version {version})")
        return "up to date"
    had_lock_file = (folder / ".lock").exists()   # committed folders carry none: leave none behind
    lock = FileLock(folder / ".lock", timeout=0)
    try:
        lock.acquire()
    except Timeout:
        raise StoreError(f"{folder} is in use by another process; wait for it to finish, then grade again") from None
    except OSError as err:
        raise StoreError(f"{folder} is read-only ({err.strerror}): grade writes {grader.name}'s verdicts into the "
                         "run folder; make it writable, or copy the folder somewhere writable and grade the "
                         "copy") from None
    try:
        raw = read_rows(folder / RESULTS, fix=reader_fix(folder / RESULTS))
        if not any(graded_rows(r) for r in raw):
            raise RegradeError(f"{folder}/results.jsonl holds no stored answers (questions) to grade; run it "
                               f"again with --grader {grader.name}")
        latest = {r.get("key"): r for r in raw}
        summary = read_rows(folder / "summary.jsonl", fix=reader_fix(folder / "summary.jsonl"))
        # Verdicts of another version of this grader are replaced and kept under
        # `<name>@legacy` / `<name>@<old hash>`; so are its results-table rows when every one of
        # its verdicts was of that one older version (else those rows are dropped).
        old_versions = {(q.get("verdicts") or {}).get(grader.name, {}).get("version")
                        for r in raw if latest.get(r.get("key")) is r and r.get("status") == "ok" and graded_rows(r)
                        for q in r["questions"]}
        superseded = (superseded_name(grader.name, next(iter(old_versions)))
                      if len(old_versions) == 1 and None not in old_versions and version not in old_versions
                      else None)
        new_rows, graded = [], 0
        for n, r in enumerate(raw, 1):
            if latest.get(r.get("key")) is not r or r.get("status") != "ok" or not graded_rows(r):
                new_rows.append(r)
                continue
            for q in r["questions"]:
                for field in ("question", "golds"):
                    if field not in q:
                        raise RegradeError(f"{folder}/{RESULTS}:{n} has a question without {field!r}; "
                                           "re-run that unit (delete its row) to store it")
            try:
                row, k = grade_row(r, grader, primary, version, keep_old=True)
            except GraderError as err:
                raise RegradeError(f"{folder}/{RESULTS}:{n}: {err}") from None
            graded += k
            new_rows.append(row)
        have = [s for s in summary if s.get("grader") == grader.name]
        if not graded and have:
            say(f"up to date {folder} ({grader.name}: every answer already has its verdict, version {version})")
            return "up to date"
        ok = list({r.get("key"): r for r in new_rows}.values())
        first = next((s for s in summary if s.get("contender")), None)
        if first is None:
            if not (folder / "summary.jsonl").exists():
                raise RegradeError(f"{folder}/summary.jsonl is missing; {reader_fix(folder / 'summary.jsonl')}")
            raise RegradeError(f"{folder}/summary.jsonl is empty; run `sealbench migrate {folder.parent}` first")
        common = {k: first[k] for k in ("run_id", "task", "protocol", "model", "model_fingerprint", "eval_set",
                                        "device", "seed", "written")}
        table = summarize_for(cfg, ok, grader.name, common)
        rest = [s for s in summary if s.get("grader") != grader.name]
        if superseded and not any(s.get("grader") == superseded for s in summary):
            rest += [{**s, "grader": superseded} for s in summary if s.get("grader") == grader.name]
        rows = table + rest if primary else rest + table   # the run's own grader's rows first
        # The results table first, the unit rows last: a kill in between leaves rows without this
        # grader's verdicts, so the next call redoes both; COMPLETE stays (the run is finished).
        write_atomic(folder / "summary.jsonl", jsonl_text(rows))
        write_atomic(folder / "summary.csv", csv_text(rows))
        write_atomic(folder / "summary.md", run_markdown(rows))
        write_atomic(folder / RESULTS, "".join(json.dumps(r, default=str) + "\n" for r in new_rows))
    finally:
        lock.release()
        if not had_lock_file:
            (folder / ".lock").unlink(missing_ok=True)
    n_ok = sum(1 for r in ok if r.get("status") == "ok")
    kept = f"; the older version's verdicts and rows are kept as {superseded}" if superseded else ""
    say(f"graded {folder} with {grader.name} ({version}): {graded} answers of {n_ok} units; nothing trained{kept}")
    return "graded"


def _up_to_date(folder: Path, name: str, version: str) -> bool:
    """Every answer of the run already has `name`'s verdict of `version`, and the results table has
    `name`'s rows (read only; the checks under the lock in grade_run decide everything else)."""
    raw = read_rows(folder / RESULTS, fix=reader_fix(folder / RESULTS))
    summary = read_rows(folder / "summary.jsonl", fix=reader_fix(folder / "summary.jsonl"))
    if not any(s.get("grader") == name for s in summary) or not any(graded_rows(r) for r in raw):
        return False
    latest = {r.get("key"): r for r in raw}
    return all(((q.get("verdicts") or {}).get(name) or {}).get("version") == version
               for r in latest.values() if r.get("status") == "ok" and graded_rows(r) for q in r["questions"])


def main_grade_run(folder: str, grader: str) -> int:
    grade_run(Path(folder), grader, say=lambda m: print(m, file=sys.stderr))
    return 0
