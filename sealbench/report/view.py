"""`sealbench view RUN_DIR [--out FILE] [--data-dir D] [--grader NAME] [--open]`: one run folder as a page to browse.

Writes one self-contained HTML page (inline CSS and JS, no external assets; default
RUN_DIR/view.html) showing what the numbers are made of:

* per item (knowledge: the passage's title and context; ARC: the task's grids in the official
  palette) every contender's unit: its self-edit(s), training stats (steps, tokens, first/last
  loss), and each question with the prediction beside the gold, the verdict and the grader's
  reason (ARC: each test input's gold beside the voted attempts);
* continual runs: per sequence the accuracy matrix, the steps and the answers after every step;
* RL run folders (`round_R/`): every sampled self-edit with its reward, kept ones marked;
* `--grader NAME` shows NAME's verdicts and numbers (a knowledge run graded with `sealbench grade`);
  the page says which grader it shows and which is the run's;
* filters by contender (RL: round), verdict, disagreement between graders (the shown grader vs
  EM, and every other grader in a question's `verdicts`) and degenerate outputs (`flags`:
  empty, a line repeated, a repeated 4-gram, runaway = raw much longer than the cut prediction).

Items' texts are loaded as the run loaded them (its config; `--data-dir` overrides the data dir);
when that fails the page says so and still shows every row. A missing, unfinished or old-format
folder is an error (exit 2, one line).
"""
from __future__ import annotations

import json
import sys
import webbrowser
from collections import Counter
from pathlib import Path

from ..families import PACKAGES, recorded_grader
from ..store import COMPLETE, RESULTS, SELF_EDITS, short_results
from .compare import CSS, html_table, page
from .results import ANSWER_GRADERS, FIRST, answer_grader, label, order_key, read_run_rows, sort_table, wide
from .view_items import ARC_COLORS, Builder, ViewError, _rows, arc, continual, esc, knowledge, rl

VIEW_CSS = CSS.replace("max-width:1360px", "max-width:1360px;font-size:14px") + """
.top{display:flex;gap:1.5rem;align-items:flex-start;flex-wrap:wrap}.bar{position:sticky;top:0;background:#fff;
border-bottom:1px solid #d0d7de;padding:.4rem 0;z-index:2}
.bar label{margin-right:1rem;font-size:.85rem}.item{margin-top:1.2rem}.unit{border-left:3px solid #d0d7de;
padding:.2rem .8rem;margin:.6rem 0}.unit h3{margin:.2rem 0}.stats{color:#57606a;font-size:.8rem}
pre{white-space:pre-wrap;margin:0;font-size:.8rem;max-height:16rem;overflow:auto}
.ctx{max-height:9rem;overflow:auto;background:#f6f8fa;padding:.4rem;font-size:.85rem}
table.qa{display:table;width:100%;table-layout:fixed}table.qa td{white-space:normal;text-align:left;
vertical-align:top}tr.right td.v{color:#1a7f37;font-weight:600}tr.wrong td.v{color:#cf222e;font-weight:600}
.flag{background:#fff1c2;color:#7d4e00;border-radius:3px;padding:0 .3rem;font-size:.75rem;margin-right:.2rem}
.dis{background:#ddf4ff;color:#0550ae;border-radius:3px;padding:0 .3rem;font-size:.75rem}
.kept{color:#1a7f37;font-weight:700}table.grid{display:inline-table;border-collapse:collapse;margin:.2rem}
table.grid td{width:12px;height:12px;padding:0;border:1px solid #555}.pair{display:inline-block;margin:0 1rem .4rem 0}
""" + "".join(f".k{i}{{background:{c}}}" for i, c in enumerate(ARC_COLORS))
VIEW_JS = """
var F=[].slice.call(document.querySelectorAll('[data-f]'));
function apply(){var n=0;document.querySelectorAll('tr.ans').forEach(function(r){
 var ok=F.every(function(f){var k=f.getAttribute('data-f'),v=f.type=='checkbox'?(f.checked?'1':''):f.value,
  a=r.getAttribute('data-'+k)||'';return !v||(k!='d'?a===v:v=='*'?a!=='':a.split(' ').indexOf(v)>=0);});
 r.hidden=!ok;if(ok)n++;});
 ['.unit','.item'].forEach(function(s){document.querySelectorAll(s).forEach(function(u){
  u.hidden=!!u.querySelector('tr.ans')&&!u.querySelector('tr.ans:not([hidden])');});});
 document.getElementById('shown').textContent=n;}
F.forEach(function(f){f.addEventListener('change',apply);});apply();
"""
# ----------------------------------------------------------------------------------- checks


# ----------------------------------------------------------------------------------- folder
def open_run(folder: Path) -> dict:
    """The run's config.json; ViewError when the folder is missing, not a run, unfinished or old."""
    folder = Path(folder)
    if not folder.is_dir():
        raise ViewError(f"no run folder at {folder}")
    if not (folder / COMPLETE).exists():
        if (folder / "summary.json").exists():
            raise ViewError(f"{folder} is an old-format run folder: run `sealbench migrate {folder.parent}` first")
        if (folder / "config.json").exists():
            raise ViewError(f"{folder} is unfinished (no {COMPLETE}): re-run its command to finish it")
        raise ViewError(f"{folder} is not a run folder (no config.json or {COMPLETE})")
    short = short_results(folder)
    if short:
        raise ViewError(short)
    try:
        return json.loads((folder / "config.json").read_text())
    except (OSError, ValueError) as err:
        raise ViewError(f"{folder / 'config.json'}: cannot be read ({err})") from None


def load_items(config: dict, data_dir: str | None = None) -> tuple[dict, str]:
    """(item id -> Passage/ArcTask as the run loaded them, '' or a note why they are missing).
    Configs written before the settings schema: SQuAD passages by id (`<split>:<index>`), ARC
    tasks from their set (`tasks`, `n_tasks`, `seed`, `mini_rules`, `mini_size`)."""
    d, errors = data_dir or config.get("data_dir"), []  # None: $SEALBENCH_DATA_DIR, then ../shared/data
    try:
        from .. import registry
        from ..config import RLConfig, RunConfig

        rl = str(config.get("kind", "")).startswith("seal-rl")
        kind = RLConfig if rl else RunConfig
        cfg = kind.model_validate({k: v for k, v in {**config, "data_dir": d}.items() if k in kind.model_fields})
        fam = registry.family(cfg.task)
        items = (list(fam.rl.train_items(cfg, d)) + list(fam.rl.heldout_items(cfg, d))) if rl \
            else fam.load_items(cfg.resolve())[0]
        return {i.id: i for i in items}, ""
    except Exception as err:  # any failure only hides the texts, never the rows
        errors.append(err)
    try:
        ids = list(config.get("passage_ids") or []) + list(config.get("heldout_passage_ids") or [])
        if ids:
            from ..families.squad.data import load_passages

            return {p.id: p for split in sorted({i.split(":")[0] for i in ids}) for p in load_passages(split, d)}, ""
        from ..families.arc.data import load_tasks

        size = tuple(config["mini_size"]) if config.get("mini_size") else None
        tasks = load_tasks(config.get("tasks") or ("mini" if "mini" in str(config.get("task")) else "seal-eval"), d,
                           config.get("n_tasks"), config.get("seed") or 0, config.get("mini_rules"), size)
        return {t.id: t for t in tasks}, ""
    except Exception as err:
        errors.append(err)
    first = (str(errors[0]).splitlines() or [""])[0][:200]
    return {}, f"item texts not available ({type(errors[0]).__name__}: {first}); pass --data-dir"


# ----------------------------------------------------------------------------------- html bits


# ----------------------------------------------------------------------------------- families


# ----------------------------------------------------------------------------------- page
HEADLINES = ("accuracy", "final_accuracy", "forgetting", "pairs_solved", "task_pass2", "heldout_accuracy",
             "reward_all", "reward_kept")  # the rest is in summary.md


def _summary(folder: Path, grader: str | None = None) -> str:
    """The run's headline numbers from its results table (summary.jsonl), n beside every number,
    measured with `grader` (None: the run's); ARC's per-task rows are left to summary.md."""
    try:
        df = read_run_rows(folder)
    except ValueError as err:
        raise ViewError(str(err)) from None
    if grader is not None:
        df = df[(df["grader"] == grader) | ~df["grader"].isin(ANSWER_GRADERS)]
    df = df[(df["vs"] == "") & ~df["at"].str.contains("after=|task=") & df["metric"].isin(HEADLINES)]
    df = df.assign(contender=[label(r) for _, r in df.iterrows()])
    return html_table(sort_table(wide(df, ["contender", "at"], ["metric"], first=FIRST)))


def _controls(b: Builder, is_rl: bool, regradable: bool) -> tuple[str, dict]:
    """(counts table + filter bar, counts): per contender (RL: round) answers by verdict.
    `regradable`: the family's answers carry verdicts of several graders (not ARC's fixed grader),
    so there are disagreements to filter on."""
    by: dict[str, Counter] = {}
    for a in b.answers:
        by.setdefault(a["c"], Counter()).update({"answers": 1, a["v"]: 1, "degenerate": int(a["g"]),
                                                 "disagree": int(bool(a["d"]))})
    total, names = sum(by.values(), Counter()), sorted(by, key=order_key)
    verdicts = ("kept", "not-kept") if is_rl else ("right", "wrong", "failed")
    cols = ("answers",) + verdicts + ("degenerate",) + (() if is_rl else ("disagree",))
    table = ("<table><tr><th>answers by verdict</th>" + "".join(f"<th>{k.replace('-', ' ')}</th>" for k in cols)
             + "</tr>"
             + "".join(f"<tr><td>{esc(c)}</td>" + "".join(f"<td>{by[c][k]}</td>" for k in cols) + "</tr>"
                       for c in names)
             + "<tr><td><b>all</b></td>" + "".join(f"<td><b>{total[k]}</b></td>" for k in cols) + "</tr></table>")

    def select(fid: str, name: str, options: list[tuple[str, str]]) -> str:
        opts = "".join(f'<option value="{esc(v)}">{esc(w)}</option>' for v, w in [("", "all")] + options)
        return f'<label>{name} <select id="f-{fid}" data-f="{fid}">{opts}</select></label>'

    bar = select("c", "round" if is_rl else "contender", [(c, c) for c in names])
    bar += select("v", "verdict", [(v, v.replace("-", " ")) for v in verdicts])
    if not is_rl and regradable:
        bar += select("d", "graders", [("*", "any disagreement")] + sorted({d for a in b.answers for d in a["d"]}))
    bar += ('<label><input type="checkbox" id="f-g" data-f="g" value="1"> degenerate outputs only</label>'
            f'<span class="stats"><span id="shown">{len(b.answers)}</span> of {len(b.answers)} shown</span>')
    return table + f'</div><div class="bar">{bar}</div>', {"answers": len(b.answers), **{k: total[k] for k in cols},
                                                      "by": by}


def _as_grader(rows: list[dict], grader: str, folder: Path) -> list[dict]:
    """Knowledge rows with `grader`'s verdicts on top; one line with the fix when it has none."""
    from ..regrade import as_graded_by

    out = []
    for r in rows:
        if r.get("status", "ok") == "ok" and r.get("questions"):
            if any(grader not in (q.get("verdicts") or {}) for q in r["questions"]):
                raise ViewError(f"{folder} has no {grader} verdicts for every answer: run "
                                f"`sealbench grade {folder} --grader {grader}` first")
            r = as_graded_by(r, grader)
        out.append(r)
    return out


def build(folder: str | Path, data_dir: str | None = None, grader: str | None = None) -> tuple[str, dict]:
    """(the page, counts {answers, right, wrong, failed | kept, not kept, degenerate, disagree,
    by: {contender or round: Counter}}). `grader`: show that grader's verdicts (knowledge runs
    graded with `sealbench grade`); None: the run's."""
    folder = Path(folder)
    config = open_run(folder)
    try:  # config.json holds what decides numbers; where the data was is in the manifest
        settings = {**json.loads((folder / "manifest.json").read_text()).get("machine_settings", {}), **config}
    except (OSError, ValueError):
        settings = config
    items, note = load_items(settings, data_dir)
    is_rl = str(config.get("kind", "")).startswith("seal-rl")
    family = "arc" if "arc" in str(config.get("task") or config.get("kind")) else "squad"  # RL: seal-rl-arc
    is_arc, fixed = family == "arc", PACKAGES[family].FIXED_GRADER
    own = recorded_grader(family, str(config.get("grader") or "match"))
    if grader is not None and grader != own and (is_rl or is_arc or config.get("protocol") == "continual"):
        raise ViewError(f"--grader {grader}: this run's answers are graded by {own} only (its rows cannot be "
                        "regraded); leave --grader out")
    b = Builder(grader or own)
    rows = [] if is_rl else _rows(folder / RESULTS)
    if grader is not None and grader != own:
        rows = _as_grader(rows, grader, folder)
    if is_rl:
        rl(b, folder, items)
    elif config.get("protocol") == "continual":
        continual(b, rows, items)
    elif is_arc:
        arc(b, rows, items)
    else:
        knowledge(b, rows, items, _rows(folder / SELF_EDITS))
    controls, counts = _controls(b, is_rl, regradable=fixed is None)
    if b.missing and not note:
        note = (f"{len(b.missing)} item(s) not found in the data dir ({', '.join(b.missing[:3])}"
                f"{', …' if len(b.missing) > 3 else ''}): shown without their texts; pass --data-dir")
    what = f"{config.get('task') or config.get('kind')} · {config.get('protocol', 'rl' if is_rl else 'single')} · " \
        f"{config.get('model')} · grader {b.grader}" + (f" (the run's grader: {own})" if b.grader != own else "")
    what = f"RL run ({what}): the place to see what the RL loop taught the model to write" if is_rl else what
    what += f" · eval set {config['eval_set']}" if config.get("eval_set") else ""
    body = (f'<h1>{esc(folder.name)}</h1><p class="note">{esc(what)}</p>'
            + (f'<p class="note">{esc(note)}</p>' if note else "") + '<div class="top">' + _summary(folder, grader or own) + controls
            + "".join(b.parts) + f"<script>{VIEW_JS}</script>")
    return page(f"sealbench view · {folder.name}", body).replace(CSS, VIEW_CSS), counts


def view(folder: str | Path, out: str | Path | None = None, data_dir: str | None = None,
         grader: str | None = None) -> dict:
    """Write the page to `out` (default RUN_DIR/view.html); {path, answers, ...counts}."""
    from ..store import StoreError, _os_message, write_atomic

    text, counts = build(folder, data_dir, grader)
    path = Path(out) if out else Path(folder) / "view.html"
    fix = "pass --out a file in a writable folder on another disk (e.g. --out /tmp/view.html)"
    made = [p for p in [path.parent, *path.parent.parents] if not p.exists()]
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        write_atomic(path, text, fix)  # a full disk or a read-only folder: one line, no half page
    except (OSError, StoreError) as err:
        for p in made:  # nothing left behind: the folders this call created go again
            try:
                p.rmdir()
            except OSError:
                pass
        raise ViewError(str(err) if isinstance(err, StoreError)
                        else _os_message(err, Path(err.filename or path.parent), fix)) from None
    return {"path": str(path), **counts}


def main(argv: list[str] | None = None) -> int:
    """`sealbench view RUN_DIR [--out FILE] [--data-dir D] [--grader NAME] [--open]`; exit 2 (one line)
    for a missing, unfinished or unreadable folder, or a grader the run has no verdicts of."""
    from ..cli import Parser  # no prefixes taken for flags; an unknown flag is answered with view's own

    p = Parser(prog="sealbench view", description="Browse one run folder as an HTML page.")
    p.add_argument("dir", metavar="RUN_DIR")
    p.add_argument("--out", default=None, help="the page to write (default RUN_DIR/view.html)")
    p.add_argument("--data-dir", default=None, help="where the items' data lives (default: the run's)")
    p.add_argument("--grader", default=None, metavar="NAME",
                   help="match | em | f1 | judge: show this grader's verdicts and numbers (add them with "
                        "`sealbench grade RUN_DIR --grader NAME`); default: the run's grader")
    p.add_argument("--open", action="store_true", help="open the page in a browser")
    args = p.parse_args(argv)
    if args.grader is not None and answer_grader(args.grader) not in ANSWER_GRADERS:   # match@legacy too
        print(f"sealbench: error: --grader {args.grader!r} is not one of {', '.join(ANSWER_GRADERS)}; pick one",
              file=sys.stderr)
        return 2
    try:
        w = view(args.dir, args.out, args.data_dir, args.grader)
    except (ViewError, OSError) as err:
        print(f"sealbench: error: {err}", file=sys.stderr)
        return 2
    print(f"view: {w['answers']} answers -> {w['path']}", file=sys.stderr)
    if args.open:
        webbrowser.open(Path(w["path"]).resolve().as_uri())
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
