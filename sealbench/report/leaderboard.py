"""`sealbench leaderboard DIR [DIR ...] [--out OUT] [--data-dir D] [--grader NAME] [--no-plots] [--check]`: like-for-like rankings.

Finds finished run folders at any depth under each DIR and writes `leaderboard.md` and a
self-contained `leaderboard.html` (inline CSS, charts as base64 PNGs) into OUT (default: the first
DIR). Rules:

* One table per comparable group: same task, protocol, model, grader and eval_set (and the same
  `at` of the headline, e.g. CPT's largest N). Rows of different groups never share a ranking; a
  group with one contender is still shown.
* Entries are (run, contender) pairs ranked by the headline (`results.headline`: accuracy;
  cpt: accuracy at the largest N; continual: accuracy after all edits; ARC: pairs solved),
  competition ranking: ties share a rank ("1, 2, 2, 4").
* The open-book ceiling (role ceiling) and SEAL's published numbers (role reference, from
  `results.reference_rows`, shown in every group of the same task and protocol) are marked in the
  contender cell and in italics, and never ranked.
* Every number shows its n; when the top entry's 95% CI overlaps another ranked entry's (or they
  tie, or there is no CI), the group says "these contenders cannot be separated at this n".
* Columns: rank, contender, metric % (grader) [95% CI], n, Δ vs base (p), s/edit, and for knowledge
  groups the mean answer length in words and the rank by SQuAD F1 (marked ≠ where it differs from
  the rank by the group's grader, and named under the table); run id, device and the config fields
  that differ are the contender cell's hover text and a details table.
* `--grader NAME` ranks only numbers measured with NAME (runs get a grader's rows with
  `sealbench grade RUN_DIR --grader NAME`); without it, every grader a run has is its own group,
  except an older version of a grader that `sealbench grade` replaced (`match@legacy`), which is
  ranked only when asked for by name.
* A group whose values are all 0 says so instead of drawing a chart; each chart has one metric.
* Same inputs, same bytes: no timestamps other than the runs' own.
Nothing to rank is an error (exit 2, one line). `--check` (CI) writes nothing: it rebuilds into a temp
dir and exits 1 with one line naming the first of OUT's leaderboard.md / leaderboard.html that is
missing or differs from the fresh build.
"""
from __future__ import annotations

import argparse
import base64
import sys
import tempfile
from pathlib import Path

import pandas as pd

from markupsafe import Markup

from . import pages, plots
from .compare import GROUP, config_diffs, html_table, page
from .results import (DASH, ROLE_LABEL, cell_text, fmt_p, headline, load_results, md_table, order_key, reference_path,
                      reference_rows, rows_to_frame, select_grader)

KEY = GROUP + ["at"]
MODEL_NOTE = "SEAL paper: Qwen2.5-7B, GPT-4.1 judge, SEAL's 200 evaluation passages"
SEPARATE = "these contenders cannot be separated at this n"
LEGEND = {"ceiling": "*open-book ceiling*: the passage is in the prompt; an upper reference, not ranked.",
          "reference": "*SEAL paper*: SEAL's published numbers (Qwen2.5-7B, GPT-4.1 judge, SEAL's 200 passages): "
                       "another model, grader and eval set, shown for orientation, not ranked."}


class EmptyLeaderboard(RuntimeError):
    """No finished run with a rankable headline."""


def competition_rank(values: pd.Series) -> pd.Series:
    """1, 2, 2, 4: ties (equal to 12 decimals) share the best rank, higher is better."""
    return values.round(12).rank(method="min", ascending=False).astype(int)


def _lookup(df: pd.DataFrame) -> dict[tuple, pd.Series]:
    """(run_id, contender, grader, metric, vs, at) -> row, for Δ vs base, s/edit, answer words and
    F1 rank: a run graded by several graders has one Δ vs base per grader."""
    return {(r.run_id, r.contender, r.grader, r.metric, r.vs, r.at): r for r in df.itertuples(index=False)}


def _delta(look, e) -> str:
    r = look.get((e["run_id"], e["contender"], e["grader"], "accuracy_diff", "base", e["at"]))
    if r is None or pd.isna(r.value):
        return DASH
    return f"{r.value * 100:+.1f}" + (f" ({fmt_p(r.p_value)})" if pd.notna(r.p_value) else "")


def _seconds(look, e) -> str:
    r = look.get((e["run_id"], e["contender"], e["grader"], "seconds_per_edit", "", e["at"])) or \
        look.get((e["run_id"], e["contender"], e["grader"], "seconds_per_edit", "", ""))
    return DASH if r is None or pd.isna(r.value) else f"{r.value:.2f}"


def _words(look, e) -> str:
    r = look.get((e["run_id"], e["contender"], e["grader"], "answer_words", "", e["at"]))
    return DASH if r is None or pd.isna(r.value) else f"{r.value:.1f}"


def f1_ranks(look, ranked: pd.DataFrame) -> list | None:
    """The ranked entries' competition ranks by SQuAD F1 at the same `at` (None when any has no F1)."""
    f1 = [look.get((e["run_id"], e["contender"], e["grader"], "f1", "", e["at"])) for _, e in ranked.iterrows()]
    if not f1 or any(r is None or pd.isna(r.value) for r in f1):
        return None
    return competition_rank(pd.Series([r.value for r in f1])).tolist()


def separable_note(ranked: pd.DataFrame) -> str:
    """The plain note when the top entry cannot be told apart from others at this n ('' if it can)."""
    if len(ranked) < 2:
        return ""
    top = ranked.iloc[0]
    close = [e for _, e in ranked.iloc[1:].iterrows()
             if e["value"] == top["value"] or pd.isna(top["ci_low"]) or pd.isna(e["ci_high"])
             or e["ci_high"] >= top["ci_low"]]
    if not close:
        return ""
    names = ", ".join([top["label"]] + [e["label"] for e in close])
    return f"{SEPARATE}: {names} (tied, or their 95% CIs overlap)."


def board(df: pd.DataFrame, refs: pd.DataFrame) -> list[dict]:
    """Per comparable group: {key, title, metric, entries (every shown row, ranked first, with
    rank, label, marked), table (display), details, note, cells (continual)}."""
    top = headline(df).dropna(subset=["value"])
    ref_top = headline(refs) if not refs.empty else refs
    diffs, look = config_diffs(df), _lookup(df)
    groups = []
    for key, g in top.groupby(KEY, sort=True):
        task, protocol, model, grader, eval_set, at = key
        ranked = g[g["role"] == "contender"].copy()
        if ranked.empty:
            continue
        ranked["rank"] = competition_rank(ranked["value"])
        twice = ranked["contender"].duplicated(keep=False)
        ranked["label"] = [f"{c} ({r[-10:]})" if d else c
                           for c, r, d in zip(ranked["contender"], ranked["run_id"], twice)]
        ranked = ranked.iloc[sorted(range(len(ranked)), key=lambda i: (
            ranked["rank"].iloc[i], order_key(ranked["contender"].iloc[i]), ranked["run_id"].iloc[i]))]
        same = (ref_top["task"] == task) & (ref_top["protocol"] == protocol) if len(ref_top) else []
        marked = pd.concat([g[g["role"] == "ceiling"], ref_top[same]])
        marked = marked.assign(rank=pd.NA, label=[
            f"{r.contender} ({ROLE_LABEL[r.role]}" + (f", {r.at})" if r.role == "reference" and r.at else ")")
            for r in marked.itertuples()])
        entries = pd.concat([ranked, marked], ignore_index=True)
        is_marked = (entries["role"] != "contender").tolist()
        metric = g["metric"].iloc[0]
        table = pd.DataFrame({
            "rank": [DASH if m else str(r) for r, m in zip(entries["rank"], is_marked)],
            "contender": entries["label"],
            f"{plots.axis_label(metric)} ({grader}) [95% CI]": [cell_text(e, with_n=False)
                                                                for _, e in entries.iterrows()],
            "n": [DASH if pd.isna(e["n"]) else f"{e['n']} {e['unit']}" for _, e in entries.iterrows()],
            "Δ vs base (p)": [DASH if m else _delta(look, e) for (_, e), m in zip(entries.iterrows(), is_marked)],
            "s/edit": [DASH if m else _seconds(look, e) for (_, e), m in zip(entries.iterrows(), is_marked)]})
        words = [DASH if e["role"] == "reference" else _words(look, e) for _, e in entries.iterrows()]
        if any(w != DASH for w in words):
            table["answer words"] = words
        by_f1, rank_note = (f1_ranks(look, ranked) if grader != "f1" else None), ""
        if by_f1 is not None:
            moved = [lab for lab, a, b in zip(ranked["label"], ranked["rank"], by_f1) if a != b]
            table["F1 rank"] = [f"{b} ≠" if a != b else str(b) for a, b in zip(ranked["rank"], by_f1)] \
                + [DASH] * (len(entries) - len(ranked))
            if moved:
                rank_note = (f"≠: ranked differently by SQuAD F1 than by {grader}: {', '.join(moved)} "
                             "(a grader's bias can depend on the contender: docs/grading.md).")
        ours = entries[entries["role"] != "reference"]
        details = pd.DataFrame({
            "contender": ours["label"], "run id": ours["run_id"], "device": ours["device"].replace("", DASH),
            "seed": ours["seed"].astype(str), "written": ours["written"],
            "config differs": [diffs.get(r) or DASH for r in ours["run_id"]]})
        legend = " ".join(LEGEND[role] for role in ("ceiling", "reference") if (entries["role"] == role).any())
        mine = df[df["run_id"].isin(ranked["run_id"]) & (df["eval_set"] == eval_set) & (df["vs"] == "")]
        cells = mine[(mine["protocol"] == "continual") & mine["at"].str.contains("after=")]
        ref_g = refs[(refs["task"] == task) & (refs["protocol"] == protocol)] if len(refs) else refs
        curve = mine[(mine["protocol"] == "cpt") & (mine["metric"] == "accuracy")]
        groups.append({"key": key, "metric": metric, "entries": entries, "table": table, "details": details,
                       "marked": is_marked, "note": separable_note(ranked), "rank_note": rank_note,
                       "legend": legend, "cells": cells,
                       "curve": curve, "ref_cells": ref_g[ref_g["at"].str.contains("after=")],
                       "ref_curve": ref_g[ref_g["metric"] == "accuracy"],
                       "title": f"{task} · {protocol} · {model}",
                       "subtitle": f"grader {grader} · eval set {eval_set}" + (f" · at {at}" if at else "")})
    return groups


def _charts(group: dict, folder: Path) -> tuple[list[tuple[str, str]], str]:
    """([(caption, data URI)], the words said instead of charts when every value is 0)."""
    entries, metric, title = group["entries"], group["metric"], f"{group['title']} · {group['subtitle']}"
    if plots.all_zero(entries.loc[entries["role"] != "reference", "value"]):
        return [], f"Every contender scores 0.0 ({plots.axis_label(metric)}) in this group: no chart."
    seal_curve, seal_cells = group["ref_curve"], group["ref_cells"]
    figs = [(f"{plots.axis_label(metric)}, 95% CI", plots.bars(entries, folder / "bars.png", title, metric))]
    if len(group["curve"]):
        figs.append(("accuracy % against N" + (" beside SEAL's N=200 numbers" if len(seal_curve) else ""),
                     plots.cpt_curve(group["curve"], folder / "cpt.png", title, seal_curve)))
    for i, ((run, name), cells) in enumerate(group["cells"].groupby(["run_id", "contender"], sort=True)):
        figs.append((f"forgetting: {name} ({run})" + (" beside SEAL's matrix" if len(seal_cells) else ""),
                     plots.forgetting(cells, folder / f"forgetting{i}.png", f"{name} · {run[-10:]}", seal_cells)))
    return [(c, "data:image/png;base64," + base64.b64encode(p.read_bytes()).decode()) for c, p in figs if p], ""


def _render_group(g: dict, figs: list[tuple[str, str]], words: str) -> tuple[list[str], dict]:
    """One group as (Markdown lines, the values templates/leaderboard.html.j2 shows for it): title,
    ranking table, notes, charts, details."""
    shown = g["table"].assign(contender=[f"*{c}*" if m else c for c, m in zip(g["table"]["contender"], g["marked"])])
    diffs = dict(zip(g["details"]["run id"], g["details"]["config differs"]))
    hover = [MODEL_NOTE if r.role == "reference" else
             f"run {r.run_id} · device {r.device or DASH} · config: {diffs.get(r.run_id, DASH)}"
             for r in g["entries"].itertuples()]
    notes = [n for n in (g["legend"], g["note"], g.get("rank_note", ""), words) if n]
    md = [f"## {g['title']}", "", g["subtitle"], "", md_table(shown)] + [line for n in notes for line in (n, "")]
    md += ["<details><summary>details</summary>", "", md_table(g["details"]), "</details>", ""]
    shown_html = {"title": g["title"], "subtitle": g["subtitle"], "notes": [n.replace("*", "") for n in notes],
                  "table": Markup(html_table(g["table"], g["marked"], ("contender", hover))),
                  "figs": figs, "details": Markup(html_table(g["details"]))}
    return md, shown_html


def _none_rewritten(roots) -> None:
    """A finished run whose summary a process is rewriting (a re-run, `sealbench grade`) has no
    COMPLETE for a moment: ranking without it would drop it silently, so stop (exit 2) instead."""
    from ..store import holder_if_in_use
    from .results import find_run_dirs

    for root in map(Path, roots):
        for folder in find_run_dirs(root):
            if (folder / "summary.jsonl").exists() and not (folder / "COMPLETE").exists():
                holder = holder_if_in_use(folder)
                if holder:
                    raise EmptyLeaderboard(f"{folder} is being rewritten by {holder}; build the leaderboard "
                                           "again when that run finishes")


def render(groups: list[dict], roots: list[Path], skipped: list[str], ref_note: str,
           make_plots: bool) -> tuple[str, str]:
    """(leaderboard.md, leaderboard.html body)."""
    n_runs = len({r for g in groups for r in g["entries"].loc[g["entries"]["role"] != "reference", "run_id"]})
    where = ", ".join(f"`{r}`" for r in roots)
    intro = (f"{n_runs} run(s) under {where}. One table per task · protocol · model · grader · eval set: only "
             "rows measured the same way are ranked together; ties share a rank. Rows in italics are shown for "
             "reference and never ranked: the open-book ceiling (the passage is in the prompt) and SEAL's "
             "published numbers (another model, judge and eval set). Accuracy in percent with its 95% CI; "
             "n beside every number.")
    md = ["# sealbench leaderboard", "", intro + (f" {ref_note}" if ref_note else ""), ""]
    shown = []
    with tempfile.TemporaryDirectory(prefix="sealbench-lb-") as tmp:
        for k, g in enumerate(groups):
            figs, words = _charts(g, Path(tmp) / f"group{k}") if make_plots else ([], "")
            group_md, group_html = _render_group(g, figs, words)
            md += group_md
            shown.append(group_html)
    if skipped:
        md += ["## Not ranked", ""] + [f"- {s}" for s in skipped] + [""]
    body = pages.render("leaderboard.html.j2", intro=intro.replace("`", ""), ref_note=ref_note, groups=shown,
                        skipped=skipped).rstrip("\n")
    return "\n".join(md).rstrip("\n") + "\n", str(body)


def leaderboard(roots: list[str | Path], out: str | Path | None = None, data_dir: str | None = None,
                make_plots: bool = True, grader: str | None = None) -> dict:
    """Write leaderboard.md and leaderboard.html into `out` (default: the first root); return
    {md, html, n_groups, n_entries, reference (path or None), skipped}. `grader`: rank only numbers
    measured with it. Raises EmptyLeaderboard, or ValueError when no run has that grader."""
    roots = [Path(r) for r in roots]
    _none_rewritten(roots)
    df, skipped = load_results(roots)
    df = select_grader(df, grader)
    if grader is None and not df.empty:   # an older version's rows kept by `sealbench grade` are not ranked
        attrs, df = dict(df.attrs), df[~df["grader"].astype(str).str.contains("@", regex=False)]
        df.attrs = attrs
    ref_file = reference_path(data_dir)
    refs = rows_to_frame(reference_rows(data_dir))
    groups = board(df, refs)
    if not groups:
        extra = f"; {len(skipped)} folder(s) not read (unfinished or old format)" if skipped else ""
        raise EmptyLeaderboard(f"nothing to rank under {', '.join(map(str, roots))}{extra}: "
                               "run `sealbench run ...` (or `sealbench migrate`) first")
    ref_note = "" if not refs.empty else f"(SEAL's reference file {ref_file} was not found: no reference rows.)"
    md, body = render(groups, roots, skipped, ref_note, make_plots)
    out = Path(out) if out else roots[0]
    from ..store import write_atomic

    out.mkdir(parents=True, exist_ok=True)
    write_atomic(out / "leaderboard.md", md)  # a full disk or a read-only --out: one line, no half file
    write_atomic(out / "leaderboard.html", page("sealbench leaderboard", body))
    return {"md": str(out / "leaderboard.md"), "html": str(out / "leaderboard.html"), "n_groups": len(groups),
            "n_entries": sum(int((g["entries"]["role"] == "contender").sum()) for g in groups),
            "reference": str(ref_file) if not refs.empty else None, "skipped": skipped}


def check(dirs: list[str], out: str | None, data_dir: str | None = None, make_plots: bool = True,
          grader: str | None = None) -> str:
    """'' when OUT's leaderboard.md and leaderboard.html equal a fresh build of `dirs` (made in a
    temp dir; the build is deterministic), else one line naming the first missing or stale file."""
    out_dir = Path(out) if out else Path(dirs[0])
    rebuild = " ".join(["sealbench leaderboard", *dirs, "--out", str(out_dir)]
                       + (["--data-dir", data_dir] if data_dir else []) + (["--grader", grader] if grader else [])
                       + ([] if make_plots else ["--no-plots"]))
    with tempfile.TemporaryDirectory(prefix="sealbench-lb-check-") as tmp:
        leaderboard(dirs, tmp, data_dir, make_plots=make_plots, grader=grader)
        for name in ("leaderboard.md", "leaderboard.html"):
            fresh, committed = (Path(tmp) / name).read_bytes(), out_dir / name
            if not committed.exists():
                return f"{committed} is missing: run `{rebuild}` and commit it"
            old = committed.read_bytes()
            if old != fresh:
                line = next((i for i, (a, b) in enumerate(zip(old.split(b"\n"), fresh.split(b"\n")), 1) if a != b),
                            min(old.count(b"\n"), fresh.count(b"\n")) + 1)
                return (f"{committed} is stale (differs from a fresh build from line {line}): "
                        f"run `{rebuild}` and commit it")
    return ""


def main(argv: list[str] | None = None) -> int:
    """`sealbench leaderboard DIR [DIR ...] [--out OUT] [--data-dir D] [--grader NAME] [--no-plots] [--check]`;
    exit 2 (one line) when nothing can be ranked or no run has that grader; with --check, exit 1 (one
    line) when OUT's files are stale."""
    p = argparse.ArgumentParser(prog="sealbench leaderboard",
                                description="Rank like-for-like contenders; write leaderboard.md and .html.")
    p.add_argument("dirs", nargs="*", default=["reports"], metavar="DIR")
    p.add_argument("--out", default=None, help="output folder (default: the first DIR)")
    p.add_argument("--data-dir", default=None, help="where reference/ lives (default $SEALBENCH_DATA_DIR)")
    p.add_argument("--grader", default=None, metavar="NAME",
                   help="match | em | f1 | judge: rank only numbers measured with this grader (add one to a "
                        "finished run with `sealbench grade RUN_DIR --grader NAME`); default: every grader, "
                        "one table each")
    p.add_argument("--no-plots", action="store_true")
    p.add_argument("--check", action="store_true",
                   help="write nothing; exit 1 when OUT's leaderboard.md/.html differ from a fresh build (CI)")
    args = p.parse_args(argv)
    try:
        if args.check:
            stale = check(args.dirs, args.out, args.data_dir, make_plots=not args.no_plots, grader=args.grader)
            print(f"sealbench: error: {stale}" if stale else
                  f"leaderboard: {Path(args.out or args.dirs[0])}/leaderboard.md and .html are up to date",
                  file=sys.stderr)
            return 1 if stale else 0
        w = leaderboard(args.dirs, args.out, args.data_dir, make_plots=not args.no_plots, grader=args.grader)
    except (EmptyLeaderboard, ValueError) as err:
        print(f"sealbench: error: {err}", file=sys.stderr)
        return 2
    for line in w["skipped"]:
        print(f"not ranked: {line}", file=sys.stderr)
    print(f"leaderboard: {w['n_entries']} entries in {w['n_groups']} group(s) -> {w['md']}, {w['html']}"
          + ("" if w["reference"] else " (no SEAL reference file)"), file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
