"""PNG plots of results-table rows (matplotlib, Agg backend), used by compare and the leaderboard.

Every function takes rows of ONE comparable group (a DataFrame with `results.COLUMNS`), writes one
PNG and returns its path, or None when there is nothing worth drawing (no rows, or every value 0:
the caller says so in words). Fractions are drawn in percent with the metric's own axis label
(`axis_label`), so ARC solve rates and knowledge accuracy never share an axis. Output is
deterministic: same rows, same bytes (no timestamps or software version in the PNG).
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from .results import ORDER, TIMING, order_key, parse_at

PALETTE = ["#0969da", "#cf222e", "#1a7f37", "#8250df", "#bc4c00", "#0a7d91", "#6e7781", "#bf3989"]
AXIS = {"accuracy": "accuracy %", "final_accuracy": "accuracy after all edits %",
        "pairs_solved": "pairs solved %", "task_pass2": "tasks solved (pass@2) %",
        "heldout_accuracy": "held-out accuracy %"}
PARTS = {"generate_s": "self-edit generation", "data_s": "data", "train_s": "training", "merge_s": "merge",
         "answer_s": "answering", "grade_s": "grading", "seconds_per_edit": "total"}


def _plt():
    import matplotlib

    matplotlib.use("Agg", force=True)
    import matplotlib.pyplot as plt

    plt.rcParams.update({"figure.dpi": 100, "savefig.dpi": 100, "font.size": 9, "axes.spines.top": False,
                         "axes.spines.right": False, "axes.grid": True, "grid.alpha": 0.3})
    return plt


def _save(fig, path: Path) -> Path:
    import matplotlib.pyplot as plt

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, metadata={"Software": None}, bbox_inches="tight")
    plt.close(fig)
    return path


def color(contender: str) -> str:
    """The same colour for a contender in every chart."""
    key = order_key(contender)
    return PALETTE[(key[0] if key[0] < len(ORDER) else sum(map(ord, contender))) % len(PALETTE)]


def axis_label(metric: str) -> str:
    """The axis label of a fraction metric, in percent ('pairs solved %')."""
    return AXIS.get(metric, metric.replace("_", " ") + " %")


def all_zero(values) -> bool:
    """True when no value is a finite non-zero number (such a chart would be empty)."""
    v = np.asarray(pd.to_numeric(pd.Series(values), errors="coerce"), dtype=float)
    return not np.isfinite(v).any() or np.nanmax(np.abs(v)) == 0


def _yerr(df: pd.DataFrame, scale: float = 100.0) -> np.ndarray:
    """Asymmetric error bars (2 x n) from ci_low/ci_high; 0 where there is no interval."""
    lo = (df["value"] - df["ci_low"]).fillna(0).clip(lower=0)
    hi = (df["ci_high"] - df["value"]).fillna(0).clip(lower=0)
    return np.vstack([lo.to_numpy(), hi.to_numpy()]) * scale


# ----------------------------------------------------------------------------------- bars
def bars(entries: pd.DataFrame, path: Path, title: str, metric: str) -> Path | None:
    """Horizontal bars of one group's headline, best first, 95% CI error bars.

    entries: columns label, value, ci_low, ci_high, role (fractions). References are hatched,
    the open-book ceiling is drawn lighter. None when every non-reference value is 0 or NaN.
    """
    if entries.empty or all_zero(entries.loc[entries["role"] != "reference", "value"]):
        return None
    plt = _plt()
    fig, ax = plt.subplots(figsize=(7.0, 0.34 * len(entries) + 1.3))
    ys = np.arange(len(entries))[::-1]
    colors = [{"reference": "#d4a72c", "ceiling": "#8c959f"}.get(r, PALETTE[0]) for r in entries["role"]]
    ax.barh(ys, entries["value"].fillna(0) * 100, color=colors,
            hatch=[("//" if r == "reference" else "") for r in entries["role"]], edgecolor="#57606a", linewidth=0.4)
    has_ci = (entries["ci_low"].notna() & entries["ci_high"].notna()).to_numpy()
    if has_ci.any():
        ax.errorbar(entries["value"].fillna(0).to_numpy()[has_ci] * 100, ys[has_ci],
                    xerr=_yerr(entries[has_ci]), fmt="none", ecolor="black", capsize=2, lw=0.8)
    ax.set_yticks(ys)
    ax.set_yticklabels(entries["label"], fontsize=7)
    ax.set_xlim(left=0)
    ax.set_xlabel(axis_label(metric) + " (95% CI; hatched: SEAL paper; grey: open-book ceiling)")
    ax.set_title(title, fontsize=9)
    ax.grid(axis="y", visible=False)
    return _save(fig, path)


# ----------------------------------------------------------------------------------- CPT
def cpt_curve(rows: pd.DataFrame, path: Path, title: str, reference: pd.DataFrame | None = None) -> Path | None:
    """Accuracy against N (rows: metric accuracy at 'N=<int>'), one line per contender (and run
    when several), 95% CI error bars; SEAL's published N=200 points as stars if given."""
    rows = rows[rows["at"].str.startswith("N=")]
    if rows.empty or all_zero(rows["value"]):
        return None
    plt = _plt()
    fig, ax = plt.subplots(figsize=(6.4, 4.0))
    runs = sorted(rows["run_id"].unique())
    for (run, name), g in rows.groupby(["run_id", "contender"], sort=True):
        g = g.assign(N=g["at"].map(lambda a: int(parse_at(a)["N"]))).sort_values("N")
        ax.errorbar(g["N"], g["value"] * 100, yerr=_yerr(g), marker="o", capsize=3, color=color(name),
                    linestyle=["-", "--", ":", "-."][runs.index(run) % 4],
                    label=f"{name} · {run[-10:]}" if len(runs) > 1 else name)
    ns = sorted({int(parse_at(a)["N"]) for a in rows["at"]})
    if reference is not None and not reference.empty:
        for _, r in reference.iterrows():
            ax.scatter([int(parse_at(r["at"])["N"])], [r["value"] * 100], marker="*", s=90, zorder=5,
                       color=color(r["contender"]), edgecolor="black", linewidth=0.4,
                       label=f"SEAL paper (Qwen2.5-7B): {r['contender']}")
        ns.append(200)
    if max(ns) / max(1, min(ns)) >= 4:
        ax.set_xscale("log", base=2)
    ax.set_xticks(sorted(set(ns)), [str(n) for n in sorted(set(ns))])
    ax.minorticks_off()
    ax.set_xlabel("N passages in one adapter")
    ax.set_ylabel(axis_label("accuracy") + " (95% CI over passages)")
    ax.set_ylim(bottom=0)
    ax.set_title(title, fontsize=9)
    ax.legend(fontsize=7)
    return _save(fig, path)


# ----------------------------------------------------------------------------------- forgetting
def matrix(cells: pd.DataFrame) -> tuple[np.ndarray, np.ndarray]:
    """(mean, std) arrays (K+1) x K from continual cells at 'after=k,item=j'; NaN = not evaluated."""
    pos = [parse_at(a) for a in cells["at"]]
    K = max(int(p["item"]) for p in pos) + 1
    mean, std = np.full((K + 1, K), np.nan), np.full((K + 1, K), np.nan)
    for p, (_, r) in zip(pos, cells.iterrows()):
        mean[int(p["after"]), int(p["item"])] = r["value"]
        std[int(p["after"]), int(p["item"])] = r["ci_high"] - r["value"]
    return mean, std


def _retention(m: np.ndarray) -> list[float]:
    """Mean accuracy on the items edited so far after each edit (row 0: all items, unedited)."""
    out = [float(np.nanmean(m[0]))]
    for k in range(1, m.shape[0]):
        vals = m[k, :k]
        out.append(float(np.nanmean(vals)) if np.isfinite(vals).any() else float("nan"))
    return out


def _heatmap(ax, m: np.ndarray, title: str, vmax: float, cmap: str = "viridis"):
    im = ax.imshow(np.ma.masked_invalid(m * 100), cmap=cmap, vmin=0, vmax=vmax, aspect="auto")
    if m.shape[1] <= 12:
        for (i, j), v in np.ndenumerate(m):
            if np.isfinite(v):
                ax.text(j, i, f"{v * 100:.0f}", ha="center", va="center", fontsize=7,
                        color="white" if v * 100 < vmax * 0.6 else "black")
    ax.set_xticks(range(m.shape[1]))
    ax.set_yticks(range(m.shape[0]))
    ax.set_yticklabels(["before"] + [str(i) for i in range(1, m.shape[0])])
    ax.set_xlabel("item (position in sequence)")
    ax.set_ylabel("after edit")
    ax.set_title(title, fontsize=9)
    ax.grid(False)
    return im


def forgetting(cells: pd.DataFrame, path: Path, title: str, reference: pd.DataFrame | None = None) -> Path | None:
    """Heatmaps of the mean and std matrices (percent), SEAL's mean matrix if given, and the
    retention curve (items edited so far, and the first item) of each. None when no cells."""
    if cells.empty:
        return None
    plt = _plt()
    mean, std = matrix(cells)
    ref = matrix(reference)[0] if reference is not None and not reference.empty else None
    panels = 3 + (ref is not None)
    fig, axes = plt.subplots(1, panels, figsize=(4.3 * panels, 4.0), layout="constrained")
    top = max(5.0, np.nanmax(mean) * 100, np.nanmax(ref) * 100 if ref is not None else 0)
    vmax = float(min(100, np.ceil(top / 10) * 10))
    im = _heatmap(axes[0], mean, f"{title}: mean", vmax)
    fig.colorbar(im, ax=axes[0], shrink=0.8, label="accuracy %")
    im = _heatmap(axes[1], std, "std over sequences", float(max(5.0, np.ceil(np.nanmax(std) * 100))), "magma")
    fig.colorbar(im, ax=axes[1], shrink=0.8, label="std (points)")
    if ref is not None:
        _heatmap(axes[2], ref, "SEAL paper (Qwen2.5-7B): mean", vmax)
    ax = axes[-1]
    for name, m, color in [("ours", mean, PALETTE[0])] + ([("SEAL paper", ref, PALETTE[1])] if ref is not None else []):
        ax.plot(range(m.shape[0]), np.array(_retention(m)) * 100, marker="o", color=color,
                label=f"{name}: items edited so far")
        ax.plot(range(1, m.shape[0]), m[1:, 0] * 100, linestyle=":", color=color, label=f"{name}: first item")
    ax.set_xticks(range(max(mean.shape[0], ref.shape[0] if ref is not None else 0)))
    ax.set_xlabel("edits merged so far")
    ax.set_ylabel("accuracy %")
    ax.set_ylim(bottom=0)
    ax.set_title("retention", fontsize=9)
    ax.legend(fontsize=7)
    return _save(fig, path)


# ----------------------------------------------------------------------------------- timing
def time_per_edit(rows: pd.DataFrame, path: Path, title: str) -> Path | None:
    """Grouped bars per (run, contender, at): the median seconds of each phase and the total,
    IQR error bars, starting at zero: the statistic the time-per-edit table shows."""
    rows = rows[rows["metric"].isin(TIMING) & rows["value"].notna()]
    if rows.empty or all_zero(rows["value"]):
        return None
    several = rows["run_id"].nunique() > 1
    rows = rows.assign(label=[r.contender + (f" {r.at}" if r.at else "") + (f"\n{r.run_id[-10:]}" if several else "")
                              for r in rows.itertuples()])
    labels = list(dict.fromkeys(rows.sort_values(["run_id", "contender", "at"])["label"]))
    parts = [m for m in PARTS if m in set(rows["metric"])]
    plt = _plt()
    fig, ax = plt.subplots(figsize=(max(6.0, 0.32 * len(labels) * len(parts) + 2), 4.2))
    width = 0.8 / len(parts)
    for k, metric in enumerate(parts):
        g = rows[rows["metric"] == metric].set_index("label").reindex(labels)
        xs = np.arange(len(labels)) + (k - (len(parts) - 1) / 2) * width
        ax.bar(xs, g["value"].fillna(0), width=width, label=PARTS[metric],
               color="#24292f" if metric == "seconds_per_edit" else PALETTE[k % len(PALETTE)])
        ax.errorbar(xs, g["value"].fillna(0), yerr=_yerr(g, 1.0), fmt="none", ecolor="black", capsize=2, lw=0.7)
    ax.set_xticks(range(len(labels)))
    ax.set_xticklabels(labels, rotation=30, ha="right", fontsize=7)
    ax.set_ylim(bottom=0)
    ax.set_ylabel("median seconds per edit (error bars: IQR)")
    ax.set_title(title, fontsize=9)
    ax.legend(fontsize=7, ncol=min(4, len(parts)))
    ax.grid(axis="x", visible=False)
    return _save(fig, path)


# ----------------------------------------------------------------------------------- RL
def rl_rounds(rows: pd.DataFrame, path: Path, title: str) -> Path | None:
    """Left: mean reward per RL round, 'all samples' (solid) and 'kept' (dashed); right:
    held-out accuracy per round (0 = the starting model). 95% CI error bars, whole-number rounds."""
    rows = rows[rows["at"].str.startswith("round=") & rows["value"].notna()]
    rows = rows.assign(round=rows["at"].map(lambda a: int(parse_at(a)["round"])))
    if all_zero(rows.loc[rows["metric"].isin(["reward_all", "reward_kept", "heldout_accuracy"]), "value"]):
        return None
    panels = [("reward_all", "reward_kept"), ("heldout_accuracy",)]
    panels = [p for p in panels if rows["metric"].isin(p).any()]
    if not panels:
        return None
    plt = _plt()
    fig, axes = plt.subplots(1, len(panels), figsize=(5.2 * len(panels), 3.8), squeeze=False)
    styles = {"reward_all": ("-", "reward, all samples"), "reward_kept": ("--", "reward, kept"),
              "heldout_accuracy": ("-", "held-out accuracy")}
    runs = sorted(rows["run_id"].unique())
    for ax, metrics in zip(axes[0], panels):
        for i, run in enumerate(runs):
            for metric in metrics:
                g = rows[(rows["run_id"] == run) & (rows["metric"] == metric)].sort_values("round")
                if g.empty:
                    continue
                style, what = styles[metric]
                ax.errorbar(g["round"], g["value"] * 100, yerr=_yerr(g), fmt="o" + style, capsize=3,
                            color=PALETTE[i % len(PALETTE)], label=f"{what} · {run[-10:]}" if len(runs) > 1 else what)
        rounds = sorted(rows.loc[rows["metric"].isin(metrics), "round"].unique())
        ax.set_xticks(rounds)
        ax.set_xlabel("RL round" + (" (0 = starting model)" if 0 in rounds else ""))
        ax.set_ylabel("mean reward % (95% CI)" if metrics[0].startswith("reward") else "held-out accuracy % (95% CI)")
        ax.set_ylim(bottom=0)
        ax.legend(fontsize=7)
    fig.suptitle(title, fontsize=9)
    return _save(fig, path)
