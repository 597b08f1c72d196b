"""Ablation-effect curves: effect vs number of units ablated, targeted vs random groups."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
from scipy import stats

__all__ = ["targeted_curves"]


def _mean_band(values: pd.DataFrame, level: float) -> pd.DataFrame:
    """Per k: mean over replicates and its t interval (the replicate is the sample)."""
    g = values.groupby("k")["effect"]
    out = pd.DataFrame({"mean": g.mean(), "sd": g.std(ddof=1), "n": g.count()})
    half = stats.t.ppf(0.5 + level / 2, np.maximum(out["n"] - 1, 1)) * out["sd"] / np.sqrt(out["n"])
    out["low"], out["high"] = out["mean"] - half, out["mean"] + half
    return out.reset_index()


def targeted_curves(tidy: pd.DataFrame, labels: dict[str, str], level: float, path: Path) -> None:
    """One panel per layer × score: targeted and random effect vs k, with bands.

    ``tidy`` has one row per replicate (seed) × layer × ablated group (columns seed, layer,
    score, k, group, draw, effect). Each replicate's random groups (those shared by every score,
    or those matched to this panel's score) are first averaged per k; lines are means over
    replicates and bands their ``level`` t intervals.
    """
    from matplotlib.figure import Figure

    layers = list(dict.fromkeys(tidy["layer"]))
    scores = [s for s in dict.fromkeys(tidy["score"]) if s]
    panels = [(layer, score) for layer in layers for score in scores]
    ncols = min(3, len(panels))
    nrows = -(-len(panels) // ncols)
    fig = Figure(figsize=(4.6 * ncols, 3.8 * nrows))
    axes = fig.subplots(nrows, ncols, squeeze=False, sharey=True)
    for ax, (layer, score) in zip(axes.flat, panels, strict=False):
        sub = tidy[tidy["layer"] == layer]
        # Random groups shared by every score have an empty score; matched ones carry theirs.
        mine = (sub["group"] == "random") & sub["score"].isin(["", score])
        rand = sub[mine].groupby(["seed", "k"], as_index=False)["effect"].mean()
        tgt = sub[(sub["group"] == "targeted") & (sub["score"] == score)]
        for frame, name, color in ((tgt, f"top-k by {score}", "C3"), (rand, "random k", "C0")):
            band = _mean_band(frame, level)
            ax.plot(band["k"], band["mean"], marker="o", color=color, label=name)
            ax.fill_between(band["k"], band["low"], band["high"], color=color, alpha=0.2, lw=0)
        ax.set_title(f"{layer} · {score}", fontsize=10)
        ax.set_xlabel(labels.get("k", "k"))
        ax.axhline(0, color="0.7", lw=0.8, zorder=0)
        ax.legend(fontsize=8, frameon=False)
    for ax in axes.flat[len(panels) :]:
        ax.set_visible(False)
    for row in axes:
        row[0].set_ylabel(labels.get("effect", "effect"))
    fig.suptitle(f"lines: mean over replicates; bands: {level:.0%} t intervals", fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
