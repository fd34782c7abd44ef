"""`sealbench migrate DIR`: turn old run folders (`summary.json`) into results-table rows.

Old folders hold one `summary.json` in a per-protocol shape and no `COMPLETE`. For every such
finished folder under DIR (any depth) this writes `summary.jsonl`, `summary.csv`, `summary.md`
and, last, `COMPLETE`; the old files stay. A folder that already has `COMPLETE` is left alone
(idempotent); one without `summary.json` is unfinished and skipped. One line is printed per folder.

Mapping (every number keeps its n and CI):
    knowledge single   accuracy, exact_match, f1 (passages), micro_accuracy (questions) per contender;
                       paired_vs_<ref> and paired_seal_vs -> accuracy_diff with vs and p_value
    knowledge cpt      the same per N (at "N=4"); failed N give no row
    continual          matrix cells accuracy at "after=k,item=j" (mean, CI = mean ± std, n sequences),
                       final_accuracy (the old `accuracy`, CI over sequences) and forgetting
    ARC                pairs_solved (pairs), task_pass2 / task_any_edit (tasks), test_inputs_solved
    seal-rl(-arc)      reward_all / reward_kept / edits_per_second at "round=R" on the training
                       items, heldout_accuracy (and heldout_diff vs round 0) on the held-out passages
    timings            median and IQR over edits from results.jsonl (ARC's predict_s -> answer_s,
                       total_s -> seconds_per_edit), else the summary's medians
The eval set is `legacy-<task>-<n items>-<hash of the passage/task ids in config.json>`, the model
the manifest's model name, the device its device_name; `in-context` is the ceiling. A single run's
embedded `seal_rl` copy is not repeated: its RL folder is migrated on its own.

Grader-free unit keys (issue 20; `upgrade_folder`, every finished knowledge single/cpt folder with
results.jsonl, once): every stored answer gains `verdicts: {<run's grader>: {correct, reason,
version: "legacy@<git commit>"}}` and its row `grader`; rows whose key the current planner gives
with the grader in it are re-keyed to the grader-free key (the old one kept as `key_with_grader`;
the row keeps the `seed` it was trained with), so later runs with any grader reuse them; the
results table gains `answer_words` rows (mean words per answer) and no other number changes; the
manifest records `unit_keys` (scheme, counts, date). Re-keying needs the run's data (`--data-dir`,
else $SEALBENCH_DATA_DIR, else ../shared/data); without it, rows keep their keys.
"""
from __future__ import annotations

import argparse
import json
import math
import os
import sys
from pathlib import Path

from ..families import TASK_FAMILY, recorded_grader
from ..stats import timing_rows as stats_timing_rows
from .results import continual_rows, csv_text, eval_set_id, find_run_dirs, jsonl_text, make_row, run_markdown

TIMING_NAMES = {"generate_s": "generate_s", "data_s": "data_s", "train_s": "train_s", "merge_s": "merge_s",
                "answer_s": "answer_s", "predict_s": "answer_s", "grade_s": "grade_s", "total_s": "seconds_per_edit"}
KNOWLEDGE_METRICS = (("accuracy", "passages"), ("micro_accuracy", "questions"), ("exact_match", "passages"),
                     ("f1", "passages"))
ARC_METRICS = (("pairs_solved", "pairs"), ("task_pass2", "tasks"), ("task_any_edit", "tasks"),
               ("test_inputs_solved", "items"))


class MigrateError(ValueError):
    """An old folder whose summary.json has a shape this module does not know."""


def _read(path: Path) -> dict:
    try:
        return json.loads(path.read_text())
    except (OSError, json.JSONDecodeError):
        return {}


def _finite(x) -> bool:
    return isinstance(x, (int, float)) and not isinstance(x, bool) and math.isfinite(x)


def stat_rows(common: dict, metric: str, stat, unit: str, at: str = "", **extra) -> list[dict]:
    """[] or one row from an old {mean, ci_low, ci_high, n[, p_value]} stat (or a bare number)."""
    if _finite(stat):
        stat = {"mean": stat}
    if not isinstance(stat, dict) or not _finite(stat.get("mean")):
        return []
    ci = {k: float(stat[k]) if _finite(stat.get(k)) else math.nan for k in ("ci_low", "ci_high", "p_value")}
    return [make_row(**common, metric=metric, at=at, value=float(stat["mean"]), n=int(stat.get("n") or 0),
                     unit=unit, **ci, **extra)]


def timing_rows(common: dict, samples: dict[str, list[float]], at: str = "") -> list[dict]:
    """Median [IQR] over edits of every timing key in `samples` (peak memory: the max), keys in
    sorted order, named by `TIMING_NAMES` (stats.py `timing_rows`, as the families' rows)."""
    finite = {key: [v for v in samples[key] if _finite(v)] for key in sorted(samples)}
    return [make_row(**common, **dict(fields, metric=TIMING_NAMES.get(fields["metric"], fields["metric"])), at=at)
            for fields in stats_timing_rows(finite)]


def _samples_from_results(folder: Path, contender: str) -> dict[str, list[float]]:
    """Per timing key, the values of this contender's ok units in results.jsonl ({} if none)."""
    path, last = folder / "results.jsonl", {}
    for line in (path.read_text().splitlines() if path.exists() else []):
        try:
            r = json.loads(line)
        except json.JSONDecodeError:
            continue  # a torn last line
        if r.get("contender") == contender:
            last[r.get("key", len(last))] = r  # the last row per unit wins
    samples: dict[str, list[float]] = {}
    for r in (r for r in last.values() if r.get("status") == "ok"):
        for k, v in (r.get("timing") or {}).items():
            samples.setdefault(k, []).append(v)
        for k in ("steps", "tokens"):
            if _finite((r.get("train") or {}).get(k)):
                samples.setdefault(f"train_{k}", []).append(r["train"][k])
    return samples


def _summary_timing(common: dict, timing: dict, at: str = "", n_default: int = 1) -> list[dict]:
    """Rows from an old summary's timing: {key: {median|max, n}} or {key: number} (cpt)."""
    rows = []
    n_default = max([v.get("n", 0) for v in timing.values() if isinstance(v, dict)] + [n_default])
    for key, v in sorted(timing.items()):
        if isinstance(v, dict):
            value, n = v.get("median", v.get("max")), v.get("n", n_default)
        else:
            value, n = v, n_default
        if _finite(value):
            rows.append(make_row(**common, metric=TIMING_NAMES.get(key, key), at=at, value=float(value),
                                 n=int(n), unit="edits"))
    return rows


# ----------------------------------------------------------------------------------- shapes
def _knowledge(folder, summary, base) -> list[dict]:
    protocol = base["protocol"]
    rows = []
    for name, s in (summary.get("contenders") or {}).items():
        c = dict(base, contender=name, role="ceiling" if name == "in-context" else "contender")
        if protocol == "single":
            for metric, unit in KNOWLEDGE_METRICS:
                rows += stat_rows(c, metric, s.get(metric), unit)
            samples = _samples_from_results(folder, name)
            rows += timing_rows(c, samples) if samples else _summary_timing(c, s.get("timing") or {})
        elif protocol == "cpt":
            ok = {n: e for n, e in (s.get("by_n") or {}).items() if e.get("status") == "ok"}
            for n, e in sorted(ok.items(), key=lambda kv: int(kv[0])):
                for metric, unit in KNOWLEDGE_METRICS:
                    rows += stat_rows(c, metric, e.get(metric), unit, at=f"N={n}")
                if s.get("adapt", True):
                    rows += _summary_timing(c, e.get("timing") or {}, at=f"N={n}")
            if not s.get("adapt", True) and ok:  # answered the whole pool once
                rows += _summary_timing(c, ok[max(ok, key=int)].get("timing") or {})
        elif protocol == "continual":
            if s.get("matrix_mean"):
                cells = continual_rows(c, s["matrix_mean"], s.get("matrix_std"), int(s.get("n_sequences") or 0))
                rows += [r for r in cells if r["metric"] == "accuracy"]
            rows += stat_rows(c, "final_accuracy", s.get("accuracy"), "sequences")
            rows += stat_rows(c, "forgetting", {"mean": s.get("forgetting"), "n": s.get("n_sequences")}, "sequences")
            rows += _summary_timing(c, s.get("timing") or {})
        else:
            raise MigrateError(f"unknown protocol {protocol!r}")
    ref = summary.get("reference", "base")
    for name, d in (summary.get(f"paired_vs_{ref}") or {}).items():
        by_n = d.items() if protocol == "cpt" else [("", d)]
        for n, diff in by_n:
            rows += stat_rows(dict(base, contender=name, role="ceiling" if name == "in-context" else "contender"),
                              "accuracy_diff", diff, "passages", at=f"N={n}" if n else "", vs=ref)
    for other, diff in (summary.get("paired_seal_vs") or {}).items():
        rows += stat_rows(dict(base, contender="seal"), "accuracy_diff", diff, "passages", vs=other)
    return rows


def _arc(folder, summary, base) -> list[dict]:
    rows = []
    for name, s in (summary.get("contenders") or {}).items():
        c = dict(base, contender=name)
        for metric, unit in ARC_METRICS:
            rows += stat_rows(c, metric, s.get(metric), unit)
        rows += timing_rows(c, _samples_from_results(folder, name))
    return rows


def _rl(folder, summary, base, cfg) -> list[dict]:
    rows = []
    train = dict(base, eval_set=legacy_eval_set(base["task"], cfg.get("passage_ids") or cfg.get("task_ids") or []))
    for rd in summary.get("rounds") or []:
        at = f"round={rd.get('round')}"
        rows += stat_rows(train, "reward_all", rd.get("mean_reward_all"), "edits", at=at)
        rows += stat_rows(train, "reward_kept", rd.get("mean_reward_kept"), "edits", at=at)
        rows += stat_rows(train, "reward_passage_baseline", rd.get("mean_passage_baseline"), "items", at=at)
        rows += stat_rows(train, "edits_per_second", {"mean": rd.get("edits_per_second"), "n": rd.get("n_samples")},
                          "edits", at=at)
    held = dict(base, eval_set=legacy_eval_set(base["task"], cfg.get("heldout_passage_ids") or []))
    for h in summary.get("heldout") or []:
        at = f"round={h.get('round')}"
        rows += stat_rows(held, "heldout_accuracy", h.get("accuracy"), "passages", at=at)
        rows += stat_rows(held, "heldout_diff", h.get("vs_round_0"), "passages", at=at, vs="seal@round=0")
    return rows


def legacy_eval_set(task: str, ids: list) -> str:
    """`legacy-<task>-<n items>-<8 hex>` over the item ids in config order."""
    return eval_set_id(f"legacy-{task}", [str(i) for i in ids])


def legacy_rows(folder: Path) -> list[dict]:
    """All rows of one old finished run folder (summary.json + config.json + manifest.json).

    Raises MigrateError when summary.json is missing, unreadable or of an unknown shape.
    """
    folder = Path(folder)
    summary = _read(folder / "summary.json")
    if not summary:
        raise MigrateError("no readable summary.json")
    manifest, config = _read(folder / "manifest.json"), _read(folder / "config.json")
    cfg = summary.get("config") or config or manifest.get("config") or {}
    kind = summary.get("kind") or cfg.get("kind") or ""
    if kind.startswith("seal-rl"):
        arc = kind == "seal-rl-arc"
        task = ("seal_arc_mini" if str(cfg.get("tasks", "")).startswith("mini") else "seal_arc_fewshot") if arc \
            else "seal_squad_nocontext"
        protocol, configured = "rl", str(cfg.get("grader") or "match")
    else:
        task = str(summary.get("task") or cfg.get("task") or "")
        protocol = str(summary.get("protocol") or cfg.get("protocol") or "single")
        configured = str(summary.get("grader") or cfg.get("grader") or "")
    if task not in TASK_FAMILY:
        raise MigrateError(f"unknown task {task!r} (kind {kind!r})")
    grader = recorded_grader(TASK_FAMILY[task], configured)
    model = manifest.get("model") or {}
    ids = cfg.get("passage_ids") or cfg.get("task_ids") or \
        sorted(next(iter((summary.get("contenders") or {}).values()), {}).get("pass2_by_task") or [])
    seed = manifest.get("seed", cfg.get("seed", summary.get("seed", -1)))
    base = dict(run_id=str(summary.get("run_id") or folder.name), task=task, protocol=protocol,
                model=str(model.get("name") or summary.get("model") or cfg.get("model") or "unknown"),
                model_fingerprint=str(model.get("fingerprint") or summary.get("model_fingerprint") or ""),
                grader=grader, eval_set=legacy_eval_set(task, ids),
                device=str(manifest.get("device_name") or summary.get("device_name") or ""),
                seed=int(seed) if _finite(seed) else -1, written=str(summary.get("written") or ""))
    if protocol == "rl":
        return _rl(folder, summary, dict(base, contender="seal"), cfg)
    if TASK_FAMILY[task] == "arc":
        return _arc(folder, summary, base)
    return _knowledge(folder, summary, base)


def _write_atomic(path: Path, text: str) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(text)
    os.replace(tmp, path)


def migrate_folder(folder: Path) -> tuple[str, int]:
    """Migrate one folder; returns (status, number of rows): status is 'migrated',
    'already migrated' or 'unfinished'. Raises MigrateError for an unknown shape."""
    folder = Path(folder)
    if (folder / "COMPLETE").exists():
        return "already migrated", 0
    if not (folder / "summary.json").exists():
        return "unfinished", 0
    rows = legacy_rows(folder)
    if not rows:
        raise MigrateError("summary.json holds no numbers")
    _write_atomic(folder / "summary.jsonl", jsonl_text(rows))
    _write_atomic(folder / "summary.csv", csv_text(rows))
    _write_atomic(folder / "summary.md", f"# {rows[0]['run_id']}\n\nMigrated from summary.json by "
                                         f"`sealbench migrate`.\n\n{run_markdown(rows)}")
    (folder / "COMPLETE").touch()
    return "migrated", len(rows)


# ----------------------------------------------------------------------------------- grader-free keys
UNIT_KEYS_NOTE = ("knowledge unit keys and seeds no longer include the grader (issue 20): answers are graded "
                  "over stored answers (`sealbench grade`); rows re-keyed here keep the seed they were trained "
                  "with, and their old key as key_with_grader")


def _legacy_key_map(folder: Path, data_dir) -> tuple[dict[str, str], str]:
    """{old key (grader in it): grader-free key} for the units the current planner gives this
    run's config, and '' or why no map could be made (older config schema, no data)."""
    from ..config import ContenderSpec, RunConfig
    from .. import registry
    from ..edits import EditSources
    from ..families.squad import protocols

    cfg, man = _read(folder / "config.json"), _read(folder / "manifest.json")
    if "contender_specs" not in cfg:
        return {}, "config.json of an older schema"
    try:
        fields = {k: v for k, v in cfg.items() if k in RunConfig.model_fields}
        rc = RunConfig(**fields, **({"data_dir": str(data_dir)} if data_dir else {})).resolve()
        fam = registry.family(rc.task)
        items, eval_set = fam.load_items(rc)
        legacy = eval_set_id("seal-eval", [i.id for i in items])  # ids only: folders before 2026-12-02
        if cfg.get("eval_set") not in (eval_set, legacy):
            return {}, f"the data gives eval set {eval_set}, not {cfg.get('eval_set')}"
        specs = [ContenderSpec.model_validate(c) for c in cfg["contender_specs"]]
        models = man.get("models") or {}
        fps = {k: v.get("fingerprint") for k, v in models.items()}
        sources = EditSources(fam, rc, fps, {}, rc.data_dir)
        old = protocols.plan(rc, specs, items, sources, fps, legacy_keys=True)
        new = protocols.plan(rc, specs, items, sources, fps)
    except Exception as err:  # no data, a notes file missing, a config this version refuses
        return {}, f"cannot rebuild the plan ({type(err).__name__}: {str(err)[:120]})"
    return {o.key: n.key for o, n in zip(old, new)}, ""


def _answer_word_rows(summary: list[dict], rows: list[dict], pool: list[str], seed: int) -> list[dict]:
    """answer_words rows beside each knowledge accuracy row of the run's grader (same contender, at)."""
    from ..stats import answer_words
    from ..stats import mean_ci

    ok = [r for r in rows if r.get("status") == "ok" and r.get("questions")]
    out = []
    for a in summary:
        if a.get("metric") != "accuracy" or a.get("vs") or a.get("role") == "reference":
            continue
        mine = [r for r in ok if r.get("contender") == a["contender"]]
        at = a.get("at") or ""
        if at.startswith("N="):
            n = int(at[2:])
            with_n = [r for r in mine if r.get("n") == n]
            mine = with_n or [r for r in mine if r.get("n") is None and
                              (r.get("passage_id") or (r.get("passage_ids") or [None])[0]) in pool[:n]]
        words = [w for r in mine for w in answer_words(r["questions"])]
        if not words:
            continue
        ci = mean_ci(words, seed)
        fields = {k: a[k] for k in ("run_id", "task", "protocol", "model", "model_fingerprint", "contender", "role",
                                    "grader", "eval_set", "device", "seed", "written") if k in a}
        out.append(make_row(**fields, metric="answer_words", at=at, value=ci["mean"], ci_low=ci["ci_low"],
                            ci_high=ci["ci_high"], n=ci["n"], unit="questions"))
    return out


def upgrade_folder(folder: Path, data_dir=None) -> tuple[str, str]:
    """Grader-free keys for one finished folder (see the module docstring). Returns (status,
    detail): 'upgraded', 'already upgraded' or 'not a knowledge run'. Writes through temp files,
    the manifest last, so a killed upgrade is redone from the start."""
    from ..regrade import graded_rows
    from ..store import now_iso, read_rows, write_atomic, write_json
    from .results import rows_to_frame  # noqa: F401  (keeps the import order of the report package)

    folder = Path(folder)
    manifest = _read(folder / "manifest.json")
    cfg = _read(folder / "config.json")
    summary = read_rows(folder / "summary.jsonl")
    first = next((r for r in summary if r.get("task")), {})
    if (first.get("task") != "seal_squad_nocontext" or first.get("protocol") not in ("single", "cpt")
            or not (folder / "results.jsonl").exists()):
        return "not a knowledge run", ""
    if "unit_keys" in manifest:
        return "already upgraded", ""
    grader = first.get("grader") or cfg.get("grader") or "match"
    version = f"legacy@{str(manifest.get('git_commit') or 'unknown')[:12]}"
    rows = read_rows(folder / "results.jsonl")
    keymap, why = _legacy_key_map(folder, data_dir)
    rekeyed = stamped = 0
    for r in rows:
        if graded_rows(r):
            r.setdefault("grader", grader)
            for q in r["questions"]:
                if "correct" in q and grader not in (q.get("verdicts") or {}):
                    q.setdefault("verdicts", {})[grader] = {"correct": bool(q["correct"]),
                                                            "reason": q.get("reason", ""), "version": version}
                    stamped += 1
        if r.get("key") in keymap and keymap[r["key"]] != r["key"]:
            r["key_with_grader"], r["key"] = r["key"], keymap[r["key"]]
            rekeyed += 1
    keys = len({r.get("key") for r in rows})
    pool = [str(i) for i in (cfg.get("item_ids") or cfg.get("passage_ids") or [])]
    added = [] if any(s.get("metric") == "answer_words" for s in summary) else \
        _answer_word_rows(summary, rows, pool, int(first.get("seed", 0) if first.get("seed", -1) >= 0 else 0))
    table = summary + added
    write_atomic(folder / "results.jsonl", "".join(json.dumps(r, default=str) + "\n" for r in rows))
    if added:
        md = (folder / "summary.md").read_text() if (folder / "summary.md").exists() else ""
        head = md.split("## ", 1)[0] if md.startswith("# ") else ""
        write_atomic(folder / "summary.jsonl", jsonl_text(table))
        write_atomic(folder / "summary.csv", csv_text(table))
        write_atomic(folder / "summary.md", head + run_markdown(table))
    manifest["unit_keys"] = {"scheme": "grader-free", "migrated": now_iso(), "note": UNIT_KEYS_NOTE,
                             "rows_rekeyed": rekeyed, "units": keys, "answers_with_verdicts": stamped,
                             "verdict_version": version, **({"not_rekeyed_because": why} if why else {})}
    write_json(folder / "manifest.json", manifest)
    detail = f"{rekeyed} rows re-keyed" + (f" ({why})" if why else "") + f", {stamped} verdicts stored, " \
             f"{len(added)} answer-length rows"
    return "upgraded", detail


def main(argv: list[str] | None = None) -> int:
    """`sealbench migrate DIR [DIR ...]`: one line per run folder; exit 2 when DIR holds no run
    folder or a folder cannot be migrated (the others are still migrated)."""
    p = argparse.ArgumentParser(prog="sealbench migrate",
                                description="Convert old run folders (summary.json) to "
                                            "summary.jsonl/csv/md + COMPLETE, and finished knowledge runs to "
                                            "grader-free unit keys (verdicts by grader, answer length rows).")
    p.add_argument("dirs", nargs="+", type=Path, metavar="DIR")
    p.add_argument("--data-dir", default=None,
                   help="the runs' data, to re-key knowledge units without the grader (default: "
                        "$SEALBENCH_DATA_DIR, else ../shared/data); without it, rows keep their keys")
    args = p.parse_args(argv)
    folders = [f for d in args.dirs for f in find_run_dirs(d)]
    if not folders:
        print(f"sealbench: error: no run folders under {', '.join(map(str, args.dirs))}", file=sys.stderr)
        return 2
    failed = 0
    for folder in folders:
        try:
            status, n = migrate_folder(folder)
        except ValueError as err:  # MigrateError, or a number make_row refuses
            print(f"sealbench: error: cannot migrate {folder}: {err}", file=sys.stderr)
            failed += 1
            continue
        print(f"{status} {folder}" + (f" ({n} rows)" if n else "")
              + (" (no summary.json, not migrated)" if status == "unfinished" else ""))
        if status == "unfinished":
            continue
        try:
            up, detail = upgrade_folder(folder, args.data_dir)
        except ValueError as err:
            print(f"sealbench: error: cannot upgrade {folder}: {err}", file=sys.stderr)
            failed += 1
            continue
        if up == "upgraded":
            print(f"grader-free unit keys {folder}: {detail}")
    return 2 if failed else 0


if __name__ == "__main__":
    raise SystemExit(main())
