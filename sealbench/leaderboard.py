"""`sealbench leaderboard reports/`: one ranking per task · protocol · model, from every finished run.

Writes `reports/leaderboard.md` and a self-contained `reports/leaderboard.html` (inline CSS, PNGs
embedded as base64: the file can be copied or published alone). Each (run, contender) is one
entry, ranked by its headline metric (single: accuracy over passages; cpt: accuracy at the largest
N; continual: accuracy over all K passages after the K-th edit; other tasks: their `metric`).
SEAL's published numbers ($SEALBENCH_DATA_DIR/reference/seal_reference_results.json) are added as
reference rows — never ranked, always labelled with the paper's model and judge — and SEAL's
forgetting matrix is drawn beside ours.

An empty reports dir (no finished run) raises `EmptyLeaderboard` (the CLI exits 2): CI must fail
rather than publish an empty board.
"""
from __future__ import annotations

import base64
import html
import json
import os
from pathlib import Path

from .compare import DASH, Run, headline, headline_note, load_runs, n_of, page
from .stats import fmt_ci

KNOWLEDGE = "seal_squad_nocontext"
REFERENCE_FILE = "reference/seal_reference_results.json"
REF_SOURCE = "SEAL paper (Zweiger et al. 2025) · Qwen2.5-7B · GPT-4.1 judge"
# Reference keys -> our contender names.
SINGLE_REF = {"base_model": "base", "train_on_passage": "passage", "passage_plus_self_notes": "self-notes",
              "passage_plus_gpt-4.1_notes": "teacher-notes", "seal": "seal"}
# The released CPT (n=200, LoRA) summaries are keyed by whose notes were trained on (our reading).
CPT_REF = {"base": "self-notes (Qwen2.5-7B notes)", "gpt4_1": "teacher-notes (GPT-4.1 notes)",
           "iter2": "seal (RL round 2 notes)", "naive": "naive (as published)"}


class EmptyLeaderboard(RuntimeError):
    """No finished run to rank."""


def load_reference(data_dir: str | os.PathLike | None = None) -> tuple[dict | None, str]:
    """SEAL's reference results and where they were looked for."""
    from .knowledge import data_dir as resolve

    root = resolve(data_dir)
    candidates = [root / REFERENCE_FILE] if root else []
    candidates.append(Path(__file__).resolve().parent.parent.parent / "shared" / "data" / REFERENCE_FILE)
    for path in candidates:
        if path.exists():
            try:
                return json.loads(path.read_text()), str(path)
            except json.JSONDecodeError:
                return None, f"{path} (unreadable JSON)"
    return None, " or ".join(str(p) for p in candidates)


def reference_entries(reference: dict | None, task: str, protocol: str) -> list[dict]:
    if not reference or task != KNOWLEDGE:
        return []
    out = []
    if protocol == "single":
        for key, acc in (reference.get("knowledge_single_passage_n1") or {}).items():
            out.append({"contender": SINGLE_REF.get(key, key), "ref_key": key, "mean": acc,
                        "detail": "n=1, 200 passages"})
    elif protocol == "cpt":
        for key, v in (reference.get("knowledge_cpt_n200_lora") or {}).items():
            if isinstance(v, dict) and "adapter_accuracy" in v:
                out.append({"contender": CPT_REF.get(key, key), "ref_key": key, "mean": v["adapter_accuracy"],
                            "detail": f"N=200, LoRA; before: {v.get('baseline_accuracy', 0) * 100:.1f}%"})
    elif protocol == "continual":
        c = reference.get("continual") or {}
        m = c.get("mean_over_sequences")
        if m:
            K = len(m[0])
            out.append({"contender": "seal (continual self-edits)", "ref_key": "continual",
                        "mean": sum(m[K]) / K,
                        "detail": f"after all K={K} edits, S={c.get('n_sequences')} sequences; "
                                  f"before any edit {sum(m[0]) / K * 100:.1f}%"})
    return sorted(out, key=lambda e: -e["mean"])


def _groups(runs: list[Run]) -> dict[tuple, list[dict]]:
    groups: dict[tuple, list[dict]] = {}
    for r in runs:
        for name, s in r.contenders.items():
            metric, stat = headline(r, s)
            groups.setdefault(r.group, []).append({
                "run": r, "contender": name, "metric": metric, "stat": stat,
                "at": headline_note(r, name, s), "n": n_of(s, stat)})
    for entries in groups.values():
        entries.sort(key=lambda e: -(e["stat"]["mean"] if e["stat"] else float("-inf")))
    return dict(sorted(groups.items()))


def _img(path: str) -> str:
    return "data:image/png;base64," + base64.b64encode(Path(path).read_bytes()).decode()


def leaderboard(reports_dir: str | Path = "reports", data_dir: str | None = None,
                out_dir: str | Path | None = None, plots: bool = True) -> dict:
    """Write leaderboard.md and leaderboard.html into `out_dir` (default: `reports_dir`)."""
    reports_dir = Path(reports_dir)
    out = Path(out_dir) if out_dir else reports_dir
    runs, unfinished = load_runs(reports_dir)
    runs = [r for r in runs if r.contenders]
    if not runs:
        extra = f"; {len(unfinished)} unfinished run folder(s) have no summary.json yet" if unfinished else ""
        raise EmptyLeaderboard(f"the leaderboard is empty: no finished run in {reports_dir}{extra}. "
                               "Run `sealbench run ...` first.")
    reference, ref_where = load_reference(data_dir)
    out.mkdir(parents=True, exist_ok=True)
    groups = _groups(runs)
    figures: dict[tuple, list[tuple[str, str]]] = {}
    if plots:
        import tempfile

        from . import plots as plotting

        tmpdir = tempfile.TemporaryDirectory(prefix="sealbench-lb-")
        tmp = Path(tmpdir.name)
        for key, entries in groups.items():
            task, protocol, model = key
            bars = [(f"{e['contender']} · {e['run'].run_id[-10:]}", e["stat"]["mean"],
                     _f(e["stat"].get("ci_low")), _f(e["stat"].get("ci_high")), False)
                    for e in entries if e["stat"]]
            bars += [(f"{e['contender']} [SEAL paper]", e["mean"], None, None, True)
                     for e in reference_entries(reference, task, protocol)]
            bars.sort(key=lambda b: -b[1])
            figs = []
            if bars:
                p = plotting.ranking_bars(bars, f"{task} · {protocol} · {model}",
                                          tmp / f"rank_{plotting._safe('-'.join(key))}.png")
                figs.append((p, "ranking (hatched: SEAL paper reference, another model and judge)"))
            if protocol == "continual":
                seal = (reference or {}).get("continual")
                for e in entries:
                    s = e["run"].contenders[e["contender"]]
                    if s.get("matrix_mean"):
                        p = plotting.forgetting(s["matrix_mean"], s.get("matrix_std"), e["contender"],
                                                tmp / f"forget_{plotting._safe(e['run'].run_id + e['contender'])}.png",
                                                seal)
                        figs.append((p, f"forgetting: {e['contender']} ({e['run'].run_id}) beside SEAL's matrix"))
            figures[key] = figs
    md, body = _render(groups, reference, ref_where, figures, unfinished, reports_dir)
    if plots:
        tmpdir.cleanup()
    (out / "leaderboard.md").write_text(md)
    (out / "leaderboard.html").write_text(page("sealbench leaderboard", body))
    return {"md": str(out / "leaderboard.md"), "html": str(out / "leaderboard.html"), "n_runs": len(runs),
            "n_entries": sum(len(v) for v in groups.values()), "reference": ref_where if reference else None}


def _f(x):
    import math

    return None if x is None or (isinstance(x, float) and math.isnan(x)) else x


def _render(groups, reference, ref_where, figures, unfinished, reports_dir) -> tuple[str, str]:
    n_runs = len({e["run"].run_id for entries in groups.values() for e in entries})
    md = ["# sealbench leaderboard", "",
          f"{n_runs} run(s) from `{reports_dir}`. Rows marked **[reference]** are SEAL's published numbers "
          f"({REF_SOURCE}): another model and judge, shown for orientation, never ranked.", ""]
    body = [f"<h1>sealbench leaderboard</h1><p class=\"meta\">{n_runs} run(s) from "
            f"<code>{html.escape(str(reports_dir))}</code>. Rows marked <span class=\"badge\">reference</span> "
            f"are SEAL's published numbers ({html.escape(REF_SOURCE)}): another model and judge, shown for "
            f"orientation, never ranked.</p>"]
    if not reference:
        md.append(f"_SEAL reference file not found ({ref_where}); no reference rows._\n")
        body.append(f"<p class=\"note\">SEAL reference file not found ({html.escape(ref_where)}); "
                    "no reference rows.</p>")
    headers = ["rank", "contender", "metric % [95% CI]", "n", "at", "run", "device", "config"]
    for (task, protocol, model), entries in groups.items():
        title = f"{task} · {protocol} · {model}"
        md += [f"## {title}", "", "| " + " | ".join(headers) + " |", "|" + "---|" * len(headers)]
        body.append(f"<h2>{html.escape(title)}</h2><table><thead><tr>"
                    + "".join(f"<th>{h}</th>" for h in headers) + "</tr></thead><tbody>")
        rank = 0
        for e in entries:
            r = e["run"]
            rank += 1 if e["stat"] else 0
            cfg = ", ".join(f"{k}={v}" for k, v in (r.diff or r.key_config).items()) or DASH
            cells = [str(rank) if e["stat"] else DASH, e["contender"],
                     fmt_ci(e["stat"]) if e["stat"] else DASH, e["n"] or DASH, e["at"] or DASH,
                     r.run_id, r.device or DASH, cfg]
            md.append("| " + " | ".join(str(c).replace("|", "\\|") for c in cells) + " |")
            body.append("<tr>" + "".join(f"<td>{html.escape(str(c))}</td>" for c in cells) + "</tr>")
        for ref in reference_entries(reference, task, protocol):
            cells = ["ref", ref["contender"], f"{ref['mean'] * 100:.1f}", DASH, ref["detail"],
                     f"SEAL paper ({ref['ref_key']})", "Qwen2.5-7B, GPT-4.1 judge", DASH]
            md.append("| " + " | ".join(["**[reference]**"] + [str(c) for c in cells[1:]]) + " |")
            body.append('<tr class="ref">' + "".join(f"<td>{html.escape(str(c))}</td>" for c in cells) + "</tr>")
        md.append("")
        body.append("</tbody></table>")
        figs = figures.get((task, protocol, model), [])
        if figs:
            body.append('<div class="figs">' + "".join(
                f'<figure><img src="{_img(p)}" alt="{html.escape(c)}"><figcaption>{html.escape(c)}'
                f"</figcaption></figure>" for p, c in figs) + "</div>")
    if unfinished:
        md.append(f"Unfinished runs (no summary yet, not ranked): {', '.join(unfinished)}\n")
        body.append(f"<p class=\"note\">Unfinished runs (no summary yet, not ranked): "
                    f"{html.escape(', '.join(unfinished))}</p>")
    return "\n".join(md) + "\n", "\n".join(body)


def main(argv: list[str] | None = None) -> int:
    import argparse
    import sys

    p = argparse.ArgumentParser(prog="sealbench leaderboard",
                                description="Rank every finished run; write leaderboard.md and .html.")
    p.add_argument("reports_dir", nargs="?", default="reports")
    p.add_argument("--out", default=None, help="output folder (default: REPORTS_DIR)")
    p.add_argument("--data-dir", default=None, help="where reference/ lives (default $SEALBENCH_DATA_DIR)")
    p.add_argument("--no-plots", action="store_true")
    args = p.parse_args(argv)
    try:
        w = leaderboard(args.reports_dir, args.data_dir, args.out, plots=not args.no_plots)
    except EmptyLeaderboard as err:
        print(f"sealbench: error: {err}", file=sys.stderr)
        return 2
    print(f"leaderboard: {w['n_entries']} entries from {w['n_runs']} run(s) -> {w['md']}, {w['html']}"
          + ("" if w["reference"] else " (no SEAL reference file found)"), file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
