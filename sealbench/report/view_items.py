"""The run viewer's renderers (report/view.py builds the page): one per kind of run folder —
knowledge (single, cpt), continual, ARC, SEAL RL rounds — plus the flags for degenerate outputs and
grader disagreements, and ARC grids in the official palette."""
from __future__ import annotations

import html
import json
from collections import Counter
from pathlib import Path

from ..store import StoreError, read_rows, reader_fix
from .results import order_key

esc = html.escape


class ViewError(RuntimeError):
    """A folder that cannot be viewed; one line saying why."""


ARC_COLORS = ("#000000", "#0074D9", "#FF4136", "#2ECC40", "#FFDC00",
              "#AAAAAA", "#F012BE", "#FF851B", "#7FDBFF", "#870C25")  # ARC's official palette, 0-9


def norm(text: str) -> str:
    return " ".join(str(text).split())


def flags(text: str | None, raw: str | None = None) -> list[str]:
    """Degenerate-output flags: 'empty', 'line repeated N×', 'repeated 4-gram N×: "…"', and
    'runaway' (raw at least twice the prediction's length plus 40 characters: the model kept going
    until the token budget and only the cut prediction was graded)."""
    text = (text or "").strip()
    if not text:
        return ["empty"]
    out = []
    lines = Counter(line.strip() for line in text.splitlines() if len(line.strip()) >= 3)
    if lines and max(lines.values()) >= 2:
        out.append(f"line repeated {max(lines.values())}×")
    words = text.lower().split()
    grams = Counter(tuple(words[i:i + 4]) for i in range(len(words) - 3))
    if grams and not out:
        gram, n = grams.most_common(1)[0]
        if n >= 3:
            out.append(f'repeated 4-gram {n}×: "{" ".join(gram)}"')
    if raw is not None and len(raw.strip()) >= 2 * len(text) + 40:
        out.append(f"runaway: raw {len(raw.strip())} chars, prediction {len(text)}")
    return out


def disagreements(q: dict, grader: str) -> list[tuple[str, str]]:
    """[(token, words)] where graders disagree on an answer: the shown grader (`correct`) vs EM
    (`em` == 1), and vs every other grader in the question's `verdicts` ({name: {correct, reason,
    version}}, or older {name: bool}), if any."""
    verdicts = {"EM": q["em"] >= 1.0} if isinstance(q.get("em"), (int, float)) else {}
    verdicts.update({str(k): bool(v.get("correct")) if isinstance(v, dict) else bool(v)
                     for k, v in (q.get("verdicts") or {}).items() if str(k) != grader})
    mine, out = bool(q.get("correct")), []
    for name, other in verdicts.items():
        if other != mine:
            says = ("right", "wrong") if mine else ("wrong", "right")
            token = "".join(ch if ch.isalnum() else "_" for ch in f"{grader}:{says[0]}:{name}:{says[1]}".lower())
            out.append((token, f"{grader} says {says[0]}, {name} says {says[1]}"))
    return out


def _json(path: Path, default):
    return json.loads(path.read_text()) if path.exists() else default


def _rows(path: Path) -> list[dict]:
    """The newest row of each key (a retried unit supersedes its failure), in file order."""
    try:
        rows = read_rows(path, fix=reader_fix(path))
    except StoreError as err:
        raise ViewError(str(err)) from None
    latest = {r.get("key", i): r for i, r in enumerate(rows)}
    return list(latest.values())


def grid_html(grid) -> str:
    """A grid as a table of coloured cells (class k0..k9, the value as hover text)."""
    grid = [list(r) for r in grid or []]
    body = "".join("<tr>" + "".join(f'<td class="k{int(v) % 10}" title="{int(v)}"></td>' for v in r) + "</tr>"
                   for r in grid)
    return f'<table class="grid" data-shape="{len(grid)}x{len(grid[0]) if grid else 0}">{body}</table>'


def _pre(text) -> str:
    return f"<pre>{esc(str(text))}</pre>" if text not in (None, "") else '<span class="stats">(none)</span>'


def _spans(fl: list[str], dis=()) -> str:
    return "".join(f'<span class="flag">{esc(f)}</span>' for f in fl) + \
        "".join(f'<span class="dis">{esc(w)}</span>' for _, w in dis)


def _train(st: dict | None, extra: str = "") -> str:
    """'training: 5 steps · 1,525 tokens · loss 3.383 → 1.153 · 9.0 s' (nothing without stats)."""
    if not st:
        return ""
    num = lambda k: isinstance(st.get(k), (int, float))  # noqa: E731
    ok = num("first_loss") and num("last_loss")
    loss = f" · loss {st['first_loss']:.3f} → {st['last_loss']:.3f}" if ok else ""
    secs = f" · {st['seconds']:.1f} s" if num("seconds") else ""
    return (f'<p class="stats">training{extra}: {st.get("steps", "?")} steps · {st.get("tokens") or 0:,} tokens'
            f"{loss}{secs}</p>")


def _edits(texts: list) -> str:
    """Every self-edit in full, with its degenerate-output flags."""
    texts = [t for t in texts if t is not None]
    return "".join(f'<details open><summary>self-edit{f" {i + 1}" if len(texts) > 1 else ""} ({len(str(t)):,} '
                   f"chars) {_spans(flags(str(t)))}</summary>{_pre(t)}</details>" for i, t in enumerate(texts))


class Builder:
    """Collects the page's sections and every filterable answer row (for the counts)."""

    def __init__(self, grader: str):
        self.grader, self.answers, self.parts, self.missing = grader, [], [], []

    def tr(self, c: str, verdict: str, cells: list[str], fl=(), dis=()) -> str:
        """One answer row: data-c (contender / round), data-v (verdict), data-d (disagreement
        tokens), data-g (degenerate); the fourth cell is the verdict."""
        self.answers.append({"c": c, "v": verdict, "d": list(dis), "g": bool(fl)})
        cls = "right" if verdict in ("right", "kept") else "wrong" if verdict in ("wrong", "failed") else ""
        tds = "".join(f'<td class="v">{x}</td>' if i == 3 else f"<td>{x}</td>" for i, x in enumerate(cells))
        return (f'<tr class="ans {cls}" data-c="{esc(c)}" data-v="{esc(verdict)}" '
                f'data-d="{" ".join(t for t, _ in dis)}" data-g="{"1" if fl else ""}">{tds}</tr>')

    @staticmethod
    def table(head: tuple, trs: list[str]) -> str:
        """A full-width answers table; head = ((name, width %), ...)."""
        cols = "".join(f'<col style="width:{w}%">' for _, w in head)
        return (f'<table class="qa"><colgroup>{cols}</colgroup><tr>' + "".join(f"<th>{h}</th>" for h, _ in head)
                + "</tr>" + "".join(trs) + "</table>")

    def qa_table(self, c: str, qs: list[dict]) -> str:
        """Knowledge answers: question, gold(s), prediction (the raw output under it when it was cut),
        the verdict and the grader's reason, EM · F1, flags and grader disagreements."""
        trs = []
        for q in qs:
            pred, raw = q.get("prediction") or "", q.get("raw")
            fl, dis = flags(pred, raw), disagreements(q, self.grader)
            shown = _pre(pred) + (f"<details><summary>raw ({len(raw):,} chars)</summary>{_pre(raw)}</details>"
                                  if raw is not None and raw.strip() != pred.strip() else "")
            verdict = "right" if q.get("correct") else "wrong"
            em = f"{q['em']:.0f} · {q['f1']:.2f}" if isinstance(q.get("f1"), (int, float)) else "–"
            golds = esc(" | ".join(q.get("golds") or [])) or "–"
            trs.append(self.tr(c, verdict, [esc(q.get("question") or "–"), golds, shown, f"{self.grader}: {verdict}",
                                            esc(q.get("reason") or "–"), em, _spans(fl, dis)], fl, dis))
        return self.table((("question", 22), ("gold", 11), ("prediction", 30), ("verdict", 8), ("reason", 15),
                           ("EM · F1", 5), ("flags", 9)), trs)

    def unit(self, c: str, title: str, body: str, row: dict) -> str:
        """A contender's block; a failed unit gets one answer row (verdict `failed`) with its error."""
        if row.get("status", "ok") != "ok":
            body += self.table((("unit", 20), ("", 10), ("error", 50), ("verdict", 20)),
                               [self.tr(c, "failed", ["unit failed", "", esc(str(row.get("error"))), "failed"])])
        reused = f'<p class="stats">reused from {esc(row["reused_from"])}</p>' if row.get("reused_from") else ""
        return f'<div class="unit" data-c="{esc(c)}"><h3>{esc(title)}</h3>{reused}{body}</div>'


def _passage(item, open_: bool = True) -> str:
    return (f'<details{" open" if open_ else ""}><summary>passage</summary><div class="ctx">{esc(item.context)}</div>'
            "</details>") if hasattr(item, "context") else ""


def knowledge(b: Builder, rows: list[dict], items: dict, edits: list[dict]) -> None:
    """Single and cpt runs: one section per passage, one block per unit that answered it (a cpt
    adapter's block appears under each of its passages with that passage's answers)."""
    by_item: dict[str, list] = {}
    for r in rows:
        qs = r.get("questions") or [dict(q, passage_id=p["passage_id"]) for p in r.get("passages") or []
                                    for q in p["questions"]]
        pid_of = lambda q: q.get("passage_id") or r.get("passage_id")  # noqa: E731
        for pid in dict.fromkeys([pid_of(q) for q in qs] or r.get("passage_ids") or [r.get("passage_id")]):
            by_item.setdefault(pid, []).append((r, [q for q in qs if pid_of(q) == pid]))
    for pid, units in by_item.items():
        item, blocks = items.get(pid), []
        asked = {norm(q.get("question") or "") for _, qs in units for q in qs}
        if item is not None and not asked <= {norm(x.question) for x in item.questions}:
            item = None  # the same id in another data dir: not this run's passage
        b.missing += [pid] if item is None else []
        for r, qs in sorted(units, key=lambda u: (order_key(u[0]["contender"]), u[0].get("n") or 0,
                                                  u[0].get("edit_index") or 0)):
            c, many = r["contender"], r.get("n") is not None
            texts = (r["self_edits"] if r.get("self_edits") is not None and not many else
                     [r["self_edit"]] if r.get("self_edit") is not None else
                     [e.get("text") for e in edits if e.get("contender", e["key"].split("|")[0]) == c
                      and e.get("item_id", (e["key"].split("|") + [""])[1]) == pid])
            title = c + (f" · N={r['n']}" if r.get("n") else "") + \
                (f" · edit {r['edit_index']}" if r.get("edit_index") else "")
            shared = f" (one adapter for {len(r.get('passage_ids') or [])} passages)" if many else ""
            right = f'<p class="stats">{sum(bool(q.get("correct")) for q in qs)} of {len(qs)} right</p>' if qs else ""
            blocks.append(b.unit(c, title, _edits(texts) + _train(r.get("train"), shared) + right
                                 + (b.qa_table(c, qs) if qs else ""), r))
        name = getattr(item, "title", None) or units[0][0].get("title") or pid
        b.parts.append(f'<section class="item"><h2>{esc(name)} <small>{esc(pid)}</small></h2>{_passage(item)}'
                       + "".join(blocks) + "</section>")


def continual(b: Builder, rows: list[dict], items: dict) -> None:
    """One section per (contender, sequence): the accuracy matrix, then per step its training
    stats and every answer (questions and golds from the passages, in the order they were asked)."""
    for r in sorted(rows, key=lambda r: (order_key(r["contender"]), r.get("sequence", 0))):
        c, pids, steps = r["contender"], r.get("passage_ids") or [], r.get("steps") or []
        by_k: dict[int, list] = {}
        for k, answers in (r.get("answers") or {}).items():  # {k: [[passage index, prediction, correct, em, f1]]}
            by_k[int(k)] = [(pids[a[0]], dict(zip(("prediction", "correct", "em", "f1"), a[1:]))) for a in answers]
        for s in steps:  # older rows: steps[].evals[].answers = [[prediction, correct]]
            for e in s.get("evals") or []:
                by_k.setdefault(s["step"], []).extend((e["passage_id"], {"prediction": a[0], "correct": a[1]})
                                                      for a in e["answers"])
        blocks = []
        for k in sorted(by_k):
            qs, seen = [], Counter()
            for pid, a in by_k[k]:
                item, n = items.get(pid), seen[pid]
                seen[pid] += 1
                gold = item.questions[n] if item is not None and n < len(item.questions) else None
                question = gold.question if gold else f"question {n + 1}"
                qs.append({**a, "golds": gold.answers if gold else [],
                           "question": f"[{getattr(item, 'title', pid)}] {question}"})
            step = next((s for s in steps if s.get("step") == k and s.get("passage_id")), None)
            title = f"{c} · before any edit" if k == 0 else \
                f"{c} · after edit {k}" + (f" (trained on {step['passage_id']})" if step else "")
            blocks.append(b.unit(c, title, _train((step or {}).get("train")) + b.qa_table(c, qs), {}))
        cells = "".join(f"<tr><td>after {i}</td>" + "".join(
            "<td>–</td>" if v is None else f'<td style="background:rgba(26,127,55,{v * .5:.2f})">{v * 100:.0f}</td>'
            for v in row) + "</tr>" for i, row in enumerate(r.get("matrix") or []))
        head = "".join(f"<th>item {j} ({esc(p)})</th>" for j, p in enumerate(pids))
        matrix = f"<table><tr><th>accuracy %</th>{head}</tr>{cells}</table>" if cells else ""
        failed = b.unit(c, "sequence failed", "", r) if r.get("status", "ok") != "ok" else ""
        b.parts.append(f'<section class="item"><h2>{esc(c)} · sequence {r.get("sequence", 0)}</h2>{matrix}{failed}'
                       + "".join(blocks) + "</section>")


def arc(b: Builder, rows: list[dict], items: dict) -> None:
    """One section per task: its demonstrations as grids, then every contender's self-edit, edit
    status and reason, training, and per test input the gold beside the voted attempts."""
    by_task: dict[str, list] = {}
    for r in rows:
        by_task.setdefault(r.get("task_id", "?"), []).append(r)
    for tid, units in by_task.items():
        task, blocks = items.get(tid), []
        b.missing += [tid] if task is None else []
        for r in sorted(units, key=lambda u: (order_key(u["contender"]), u.get("edit_index") or 0)):
            c, preds, trs = r["contender"], r.get("predictions") or [], []
            for i, solved in enumerate(r.get("test_solved") or []):
                p = preds[i] if i < len(preds) else {}
                gold = task.test_outputs[i] if task is not None and task.test_outputs else None
                fl = [] if p.get("attempts") else ["no grid parsed"]
                atts = "".join(f'<div class="pair">attempt {j + 1} ({v} votes)<br>{grid_html(a)}</div>'
                               for j, (a, v) in enumerate(zip(p.get("attempts") or [], p.get("votes") or [])))
                atts += "".join(f"<details><summary>completion ({esc(str(x.get('transform')))}, "
                                f"{'parsed' if x.get('parsed') else 'not parsed'})</summary>{_pre(x.get('text'))}"
                                "</details>" for x in p.get("completions") or [])
                inp = grid_html(task.test_inputs[i]) if task is not None and i < len(task.test_inputs) else ""
                trs.append(b.tr(c, "right" if solved else "wrong", [
                    f"test {i + 1}<br>{inp}", grid_html(gold) if gold else "–", atts or "–",
                    "solved" if solved else "not solved",
                    f"{p.get('n_parsed', '?')} of {p.get('n_prompts', '?')} prompts parsed", _spans(fl)], fl))
            status = f'<p class="stats">self-edit {esc(str(r.get("edit_status")))}' + \
                (f" — {esc(str(r['reason']))}" if r.get("reason") else "") + \
                (f" · config {esc(json.dumps(r['config']))}" if r.get("config") else "") + "</p>"
            table = b.table((("test input", 12), ("gold", 12), ("attempts", 40), ("verdict", 10), ("parsing", 14),
                             ("flags", 12)), trs) if trs else ""
            title = c + (f" · edit {r['edit_index']}" if r.get("edit_index") else "")
            blocks.append(b.unit(c, title, _edits([r.get("self_edit")]) + status + _train(r.get("train")) + table, r))
        demos = "".join(f'<div class="pair">demo {i + 1}<br>{grid_html(x)} → {grid_html(y)}</div>'
                        for i, (x, y) in enumerate(task.train)) if task is not None else ""
        b.parts.append(f'<section class="item"><h2>{esc(tid)} <small>{esc(units[0].get("rule") or "")}</small></h2>'
                       f'<div>{demos}</div>{"".join(blocks)}</section>')


def _stat_line(stats: dict, held: list[dict]) -> str:
    """'reward all 10.0% [5.6, 14.6] (n=24) · reward kept … · SFT on 8 kept: loss 2.855 → 1.889 · held-out …'
    (a statistic without a number, e.g. no kept self-edit, is left out)."""
    pct = lambda x: f"{(x or 0) * 100:.1f}"  # noqa: E731
    bits = [f"{name.replace('mean_', '').replace('_', ' ')} {pct(s['mean'])}% [{pct(s.get('ci_low'))}, "
            f"{pct(s.get('ci_high'))}] (n={s.get('n')})"
            for name in ("reward_all", "mean_reward_all", "reward_kept", "mean_reward_kept")
            if isinstance(s := stats.get(name), dict) and isinstance(s.get("mean"), (int, float))
            and s["mean"] == s["mean"]]
    sft = stats.get("sft") or {}
    before, after = sft.get("loss_before", sft.get("first_loss")), sft.get("loss_after", sft.get("last_loss"))
    if before is not None and after is not None:
        bits.append(f"SFT on {sft.get('n_pairs')} kept: loss {before:.3f} → {after:.3f}")
    if held:
        bits.append(f"held-out accuracy {pct(sum(h['accuracy'] for h in held) / len(held))}% (n={len(held)} passages)")
    return f'<p class="stats">{esc(" · ".join(bits))}</p>' if bits else ""


def rl(b: Builder, folder: Path, items: dict) -> None:
    """Per round: reward and SFT stats, then every item's sampled self-edits with their rewards,
    best first, kept ones marked ★ (what the RL loop taught the model to write); held-out notes."""
    for rdir in sorted(folder.glob("round_*"), key=lambda p: int(p.name.split("_")[1])):
        c, held = f"round {rdir.name.split('_')[1]}", _rows(rdir / "heldout.jsonl")
        samples = _rows(rdir / "rewards.jsonl") or _rows(rdir / "samples.jsonl")  # older runs: samples with rewards
        kept = {k["key"] for k in _json(rdir / "kept.json", None) or _rows(rdir / "kept.jsonl")}
        parts = [f"<h2>{c}</h2>", _stat_line(_json(rdir / "stats.json", {}), held)]
        by_item: dict[str, list] = {}
        for s in samples:
            by_item.setdefault(s.get("item_id") or s["key"].split("|")[0], []).append(s)
        for iid, ss in by_item.items():
            trs = []
            for s in sorted(ss, key=lambda s: (-(s.get("reward") or 0), s.get("sample", 0))):
                status = s.get("edit_status") or next((d.get("edit_status") for d in s.get("details") or []
                                                       if isinstance(d, dict) and d.get("edit_status")), "")
                fl, rewards = flags(s.get("text")), s.get("rewards") or []
                reward = f"{s.get('reward') or 0:.2f}" + (f" {rewards}" if len(rewards) > 1 else "")
                trs.append(b.tr(c, "kept" if s["key"] in kept else "not-kept", [
                    f"sample {s.get('sample', '?')}", reward, _pre(s.get("text")),
                    '<span class="kept">★ kept</span>' if s["key"] in kept else "not kept", esc(str(status)),
                    _spans(fl)], fl))
            item = items.get(iid)
            title = f"{c} · {getattr(item, 'title', iid)}" + (f" ({iid})" if hasattr(item, "title") else "")
            demos = "".join(f'<div class="pair">{grid_html(x)} → {grid_html(y)}</div>' for x, y in item.train) \
                if hasattr(item, "train") else ""
            head = (("sample", 7), ("reward", 7), ("self-edit", 60), ("kept", 8), ("edit status", 8), ("flags", 10))
            parts.append(b.unit(c, title, _passage(item, False) + demos + b.table(head, trs), {}))
        if held:
            parts.append("<details><summary>held-out self-edits and accuracy</summary>" + "".join(
                f"<p><b>{esc(str(h.get('passage_id', '')))}</b>: {h['accuracy'] * 100:.0f}%</p>{_pre(h.get('text'))}"
                for h in held) + "</details>")
        b.parts.append(f'<section class="item">{"".join(parts)}</section>')
