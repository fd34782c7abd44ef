"""PNG plots for `sealbench compare` and the leaderboard (matplotlib, Agg backend, imported lazily).

Every function takes already-loaded runs (`compare.Run`) or plain numbers, writes one PNG, and
returns its path; `make_all` draws everything the runs support and returns (path, caption) pairs.
"""
from __future__ import annotations

import math
from pathlib import Path

PALETTE = ["#0969da", "#cf222e", "#1a7f37", "#8250df", "#bc4c00", "#0a7d91", "#6e7781", "#bf3989"]
STACK = {"generate_s": ("#8250df", "self-edit generation"), "train_s": ("#0969da", "training"),
         "merge_s": ("#0a7d91", "merge"), "answer_s": ("#1a7f37", "answering"), "grade_s": ("#bc4c00", "grading")}


def _plt():
    import matplotlib

    matplotlib.use("Agg", force=True)
    import matplotlib.pyplot as plt

    plt.rcParams.update({"figure.dpi": 110, "savefig.dpi": 110, "font.size": 9, "axes.spines.top": False,
                         "axes.spines.right": False, "axes.grid": True, "grid.alpha": 0.3})
    return plt


def _save(fig, path: Path) -> str:
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.tight_layout()
    fig.savefig(path)
    import matplotlib.pyplot as plt

    plt.close(fig)
    return str(path)


def _safe(name: str) -> str:
    return "".join(c if c.isalnum() or c in "-._" else "-" for c in name)


def _num(x):
    """A plottable number from a number or a {mean, ci_low, ci_high, n} stat (RL round stats)."""
    if isinstance(x, dict):
        x = x.get("mean")
    return None if x is None or (isinstance(x, float) and math.isnan(x)) else float(x)


# ----------------------------------------------------------------------------------- CPT scale
def cpt_scale(run, path: Path, reference: dict | None = None) -> str:
    """Accuracy against N per contender, 95% CI error bars; SEAL's n=200 points if given."""
    plt = _plt()
    fig, ax = plt.subplots(figsize=(6.4, 4.0))
    ns_all = [int(n) for n in run.summary.get("n_values", [])]
    for i, (name, s) in enumerate(run.contenders.items()):
        xs, ys, lo, hi = [], [], [], []
        for n in ns_all:
            acc = (s.get("by_n", {}).get(str(n)) or {}).get("accuracy") or {}
            m = _num(acc.get("mean"))
            if m is None:
                continue
            xs.append(n)
            ys.append(m * 100)
            l, h = _num(acc.get("ci_low")), _num(acc.get("ci_high"))
            lo.append(m * 100 - l * 100 if l is not None else 0)
            hi.append(h * 100 - m * 100 if h is not None else 0)
        if xs:
            ax.errorbar(xs, ys, yerr=[lo, hi], marker="o", capsize=3, color=PALETTE[i % len(PALETTE)],
                        label=name, linestyle="--" if not s.get("adapt", True) else "-")
    if reference:
        for j, (label, acc) in enumerate(reference.items()):
            ax.scatter([200], [acc * 100], marker="*", s=90, color=PALETTE[(j + 4) % len(PALETTE)], zorder=5,
                       label=f"SEAL paper (Qwen2.5-7B) N=200: {label}", edgecolor="black", linewidth=0.4)
    if reference or (ns_all and max(ns_all) / max(1, min(ns_all)) >= 4):
        ax.set_xscale("log", base=2)
    ax.set_xlabel("N passages in one adapter")
    ax.set_ylabel("accuracy % (95% CI over passages)")
    ax.set_title(f"CPT scale — {run.model}\n{run.run_id}", fontsize=9)
    ax.legend(fontsize=7, loc="best")
    return _save(fig, path)


# ----------------------------------------------------------------------------------- forgetting
def _mask_matrix(matrix, zero_upper: bool = False):
    """(K+1) x K numbers with NaN where not evaluated (None, or SEAL's 0.0 above the diagonal)."""
    import numpy as np

    m = np.full((len(matrix), len(matrix[0])), np.nan)
    for i, row in enumerate(matrix):
        for j, v in enumerate(row):
            if v is None or (zero_upper and i >= 1 and j >= i):
                continue
            m[i, j] = float(v)
    return m


def _retention(m):
    """Mean accuracy on passages edited so far after each step (row 0: all passages, unedited)."""
    import numpy as np

    out = [float(np.nanmean(m[0]))]
    for k in range(1, m.shape[0]):
        vals = m[k, :k]
        out.append(float(np.nanmean(vals)) if np.isfinite(vals).any() else float("nan"))
    return out


def _heatmap(ax, m, title, vmax, std=None):
    import numpy as np

    im = ax.imshow(np.ma.masked_invalid(m * 100), cmap="viridis", vmin=0, vmax=vmax, aspect="auto")
    K1, K = m.shape
    if K <= 12:
        for i in range(K1):
            for j in range(K):
                if np.isfinite(m[i, j]):
                    v = m[i, j] * 100
                    txt = f"{v:.0f}" if std is None or not np.isfinite(std[i, j]) else f"{v:.0f}\n±{std[i, j] * 100:.0f}"
                    ax.text(j, i, txt, ha="center", va="center", fontsize=6.5 if K > 6 else 7.5,
                            color="white" if v < vmax * 0.6 else "black")
    ax.set_xticks(range(K))
    ax.set_xticklabels([str(j) for j in range(K)])
    ax.set_yticks(range(K1))
    ax.set_yticklabels(["base"] + [str(i) for i in range(1, K1)])
    ax.set_xlabel("passage (position in sequence)")
    ax.set_ylabel("after edit")
    ax.set_title(title, fontsize=9)
    ax.grid(False)
    return im


def forgetting(mean, std, title: str, path: Path, reference: dict | None = None) -> str:
    """Heatmap of our (K+1) x K matrix, SEAL's beside it (if given), and retention curves."""
    import numpy as np

    plt = _plt()
    ours, ours_std = _mask_matrix(mean), _mask_matrix(std) if std else None
    ref = _mask_matrix(reference["mean_over_sequences"], zero_upper=True) if reference else None
    vmax = 100 * max(0.05, float(np.nanmax(ours)) if np.isfinite(ours).any() else 0.05,
                     float(np.nanmax(ref)) if ref is not None else 0)
    vmax = min(100.0, math.ceil(vmax / 10) * 10)
    ncols = 3 if ref is not None else 2
    fig, axes = plt.subplots(1, ncols, figsize=(4.8 * ncols, 4.2), layout="constrained")
    im = _heatmap(axes[0], ours, f"ours: {title}", vmax, ours_std)
    if ref is not None:
        _heatmap(axes[1], ref, f"SEAL paper (Qwen2.5-7B, K={ref.shape[1]}, "
                               f"S={reference.get('n_sequences', '?')})", vmax)
    fig.colorbar(im, ax=list(axes[: ncols - 1]), shrink=0.85, label="accuracy %", pad=0.02)
    ax = axes[-1]
    curves = [("ours", ours, PALETTE[0])] + ([("SEAL paper", ref, PALETTE[1])] if ref is not None else [])
    for label, m, color in curves:
        ax.plot(range(m.shape[0]), [v * 100 for v in _retention(m)], marker="o", color=color,
                label=f"{label}: passages edited so far")
        ax.plot(range(1, m.shape[0]), [m[k, 0] * 100 for k in range(1, m.shape[0])], linestyle=":",
                color=color, label=f"{label}: first passage")
    ax.set_xticks(range(ours.shape[0] if ref is None else max(ours.shape[0], ref.shape[0])))
    ax.set_xlabel("edits merged so far")
    ax.set_ylabel("accuracy %")
    ax.set_title("retention", fontsize=9)
    ax.legend(fontsize=7)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, bbox_inches="tight")
    plt.close(fig)
    return str(path)


# ----------------------------------------------------------------------------------- timing
def time_per_edit(runs, path: Path) -> str | None:
    """Stacked bars of median seconds per edit (generation, training, merge, answering, grading)."""
    bars = []
    for r in runs:
        for name, s in r.contenders.items():
            if r.protocol == "cpt" and s.get("adapt", True):
                items = [(f"{name} N={n}", e.get("timing") or {}) for n, e in (s.get("by_n") or {}).items()
                         if e.get("status") == "ok"]
            elif r.protocol == "cpt":  # answered the whole pool once
                e = next((e for e in (s.get("by_n") or {}).values() if e.get("status") == "ok"), {})
                items = [(f"{name} (all N)", e.get("timing") or {})]
            else:
                items = [(name, s.get("timing") or {})]
            for label, t in items:
                vals = {}
                for k in STACK:
                    v = t.get(k)
                    v = v.get("median") if isinstance(v, dict) else v
                    if _num(v) is not None:
                        vals[k] = float(v)
                if vals:
                    bars.append((f"{label}\n{r.protocol} · {r.run_id[-10:]}", vals))
    if not bars:
        return None
    plt = _plt()
    fig, ax = plt.subplots(figsize=(max(6.0, 0.75 * len(bars) + 2), 4.2))
    bottom = [0.0] * len(bars)
    for k, (color, label) in STACK.items():
        heights = [b[1].get(k, 0.0) for b in bars]
        if any(heights):
            ax.bar(range(len(bars)), heights, bottom=bottom, color=color, label=label, width=0.7)
            bottom = [x + h for x, h in zip(bottom, heights)]
    ax.set_xticks(range(len(bars)))
    ax.set_xticklabels([b[0] for b in bars], rotation=35, ha="right", fontsize=7)
    ax.set_ylabel("median seconds per edit")
    ax.set_title("Time per edit", fontsize=10)
    ax.legend(fontsize=7)
    ax.grid(axis="x", visible=False)
    return _save(fig, path)


# ----------------------------------------------------------------------------------- RL
def rl_rewards(runs, path: Path) -> str | None:
    """Per RL round, one colour per run: mean reward of all sampled self-edits (solid) and of the
    kept ones (dashed) on the RL passages, and the policy's held-out accuracy (dotted, round 0 =
    the starting model), each with its 95% CI as error bars."""
    series = []
    for r in runs:
        rounds = [x for x in r.summary.get("rounds") or [] if isinstance(x, dict)]
        heldout = [{"round": h.get("round"), "heldout": h.get("accuracy")}
                   for h in r.summary.get("heldout") or [] if isinstance(h, dict)]
        if rounds or heldout:
            series.append((r, rounds, heldout))
    if not series:
        return None
    plt = _plt()
    fig, ax = plt.subplots(figsize=(6.4, 4.0))
    all_x = set()
    for i, (r, rounds, heldout) in enumerate(series):
        metrics = ((rounds, "mean_reward_all", "-", "reward, all samples"),
                   (rounds, "mean_reward_kept", "--", "reward, kept"),
                   (heldout, "heldout", ":", "held-out accuracy"))
        for m, (rows, key, style, what) in enumerate(metrics):
            pts = [(x.get("round", j), x.get(key)) for j, x in enumerate(rows) if _num(x.get(key)) is not None]
            if not pts:
                continue
            # one colour per metric for a single run, per run otherwise; a small sideways shift
            # keeps error bars of the same round apart
            color = PALETTE[(m if len(series) == 1 else i) % len(PALETTE)]
            xs = [a + (m - 1) * 0.05 for a, _ in pts]
            ys = [_num(b) for _, b in pts]
            lo = [y - (b.get("ci_low", y) if isinstance(b, dict) else y) for y, (_, b) in zip(ys, pts)]
            hi = [(b.get("ci_high", y) if isinstance(b, dict) else y) - y for y, (_, b) in zip(ys, pts)]
            ax.errorbar(xs, ys, yerr=[lo, hi], fmt="o" + style, color=color, capsize=3, lw=1.2,
                        label=f"{r.run_id}: {what}" if len(series) > 1 else what)
            all_x.update(a for a, _ in pts)
    ax.set_xticks(sorted(all_x))  # rounds are whole numbers
    ax.set_xlabel("RL round (0 = starting model)")
    ax.set_ylabel("mean reward / accuracy (95% CI)")
    ax.set_title("SEAL outer loop per round" + (f": {series[0][0].run_id}" if len(series) == 1 else ""),
                 fontsize=10)
    ax.legend(fontsize=7)
    return _save(fig, path)


# ----------------------------------------------------------------------------------- leaderboard
def ranking_bars(entries: list[tuple[str, float, float | None, float | None, bool]], title: str, path: Path) -> str:
    """Horizontal bars: (label, mean, ci_low, ci_high, is_reference), best first."""
    plt = _plt()
    fig, ax = plt.subplots(figsize=(6.8, 0.32 * len(entries) + 1.2))
    ys = list(range(len(entries)))[::-1]
    for y, (label, m, lo, hi, ref) in zip(ys, entries):
        ax.barh(y, m * 100, color="#d4a72c" if ref else PALETTE[0], alpha=0.55 if ref else 0.9,
                hatch="//" if ref else None, edgecolor="#7d4e00" if ref else None)
        if lo is not None and hi is not None:
            ax.errorbar(m * 100, y, xerr=[[m * 100 - lo * 100], [hi * 100 - m * 100]], color="black",
                        capsize=2, lw=0.8)
    ax.set_yticks(ys)
    ax.set_yticklabels([e[0] for e in entries], fontsize=7)
    ax.set_xlabel("accuracy %  (hatched = SEAL paper reference)")
    ax.set_title(title, fontsize=9)
    ax.grid(axis="y", visible=False)
    return _save(fig, path)


def make_all(runs, out_dir: Path, reference: dict | None = None) -> list[tuple[str, str]]:
    """Every plot the runs support: [(path, caption)]. `reference`: SEAL's reference results."""
    out_dir = Path(out_dir)
    figs: list[tuple[str, str]] = []
    cpt_ref = None
    if reference and reference.get("knowledge_cpt_n200_lora"):
        cpt_ref = {k: v["adapter_accuracy"] for k, v in reference["knowledge_cpt_n200_lora"].items()
                   if isinstance(v, dict) and "adapter_accuracy" in v}
    for r in runs:
        if r.protocol == "cpt" and r.summary.get("n_values"):
            figs.append((cpt_scale(r, out_dir / f"cpt_{_safe(r.run_id)}.png", cpt_ref),
                         f"CPT scale: {r.run_id}"))
        if r.protocol == "continual":
            seal = (reference or {}).get("continual")
            for name, s in r.contenders.items():
                if s.get("matrix_mean"):
                    figs.append((forgetting(s["matrix_mean"], s.get("matrix_std"),
                                            f"{name} (K={len(s['matrix_mean'][0])}, S={s.get('n_sequences')})",
                                            out_dir / f"forgetting_{_safe(r.run_id)}_{_safe(name)}.png", seal),
                                 f"Forgetting: {name} in {r.run_id}" + (" beside SEAL's matrix" if seal else "")))
    p = time_per_edit(runs, out_dir / "time_per_edit.png")
    if p:
        figs.append((p, "Time per edit (median seconds, stacked)"))
    p = rl_rewards(runs, out_dir / "rl_rewards.png")
    if p:
        figs.append((p, "RL rewards per round"))
    return figs
