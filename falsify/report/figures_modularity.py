"""Modularity figures: clusterability per condition against its baselines, and the clusters ×
classes damage heatmap (Golechha, Cope & Schoots 2024; modularity.md)."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from scipy import stats

__all__ = ["DETAIL_FIGURES", "clusterability_by_condition", "damage_heatmaps"]


def _mean_ci(values: np.ndarray, level: float) -> tuple[float, float, float]:
    m = float(np.mean(values))
    if len(values) < 2:
        return m, m, m
    lo, hi = stats.t.interval(level, len(values) - 1, loc=m, scale=stats.sem(values))
    return m, float(lo), float(hi)


def clusterability_by_condition(
    details: pd.DataFrame, order: list[str], spec: Any, level: float, path: Path
) -> None:
    """Per condition: each seed's clusterability C (grey, seeds joined), the mean of C with its
    t CI, and the means of its two baselines (random partition, shuffled weights).

    ``details`` has columns condition, seed, clusterability, random_baseline, shuffled_baseline.
    """
    from matplotlib.figure import Figure

    pos = {c: i for i, c in enumerate(order)}
    fig = Figure(figsize=(max(5.0, 1.2 * len(order) + 2.5), 4.4))
    ax = fig.subplots()
    for _, g in details.groupby("seed"):
        g = g.assign(x=g["condition"].map(pos)).sort_values("x")
        ax.plot(g["x"], g["clusterability"], color="0.75", lw=0.8, marker="o", ms=3, zorder=1)
    styles = [
        ("clusterability", "C0", "s", "clusterability C"),
        ("shuffled_baseline", "C3", "v", "shuffled-weights baseline"),
        ("random_baseline", "C2", "D", "random-partition baseline"),
    ]
    for j, (col, color, marker, label) in enumerate(styles):
        for i, c in enumerate(order):
            m, lo, hi = _mean_ci(details.loc[details["condition"] == c, col].to_numpy(float), level)
            ax.errorbar(
                pos[c] + 0.08 * (j - 1),
                m,
                yerr=[[m - lo], [hi - m]],
                fmt=marker,
                color=color,
                ms=6,
                capsize=3,
                zorder=2,
                label=label if i == 0 else None,
            )
    ax.set_xticks(range(len(order)))
    ax.set_xticklabels([c.replace(", ", "\n") for c in order], fontsize=8)
    ax.set_ylabel(f"clusterability (k = {spec.k}, mean over layers)")
    ax.set_title(f"clusterability vs its baselines: mean and {100 * level:g}% CI", fontsize=10)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)


def damage_heatmaps(
    panels: list[tuple[int, np.ndarray, np.ndarray]], layer: str, what: str, path: Path
) -> None:
    """One ``[clusters, classes]`` heatmap per replicate (up to 6): the per-class damage from
    ablating each cluster of ``layer``. ``panels``: (seed, damage, cluster sizes). Clusters are
    not matched across replicates, so each panel is its own model; rows are ordered by total
    damage and labelled with the cluster's number of units."""
    from matplotlib.figure import Figure

    shown = panels[:6]
    n_clusters, n_classes = shown[0][1].shape
    limit = max(float(np.nanmax(np.abs(d))) for _, d, _ in shown) or 1.0
    cols = min(3, len(shown))
    rows = -(-len(shown) // cols)
    fig = Figure(
        figsize=(cols * max(3.2, 0.32 * n_classes + 1.4), rows * (0.35 * n_clusters + 1.6)),
        layout="constrained",
    )
    axes = fig.subplots(rows, cols, squeeze=False)
    im = None
    for ax, (seed, damage, sizes) in zip(axes.ravel(), shown, strict=False):
        order = np.argsort(-np.nansum(damage, axis=1))
        im = ax.imshow(damage[order], cmap="RdBu_r", vmin=-limit, vmax=limit, aspect="auto")
        ax.set_xticks(range(n_classes))
        ax.set_xticklabels([str(c) for c in range(n_classes)], fontsize=7)
        ax.set_yticks(range(n_clusters))
        ax.set_yticklabels([f"c{c} ({sizes[c]} units)" for c in order], fontsize=7)
        ax.set_title(f"seed {seed}", fontsize=9)
        ax.set_xlabel("class", fontsize=8)
    for ax in axes.ravel()[len(shown) :]:
        ax.axis("off")
    fig.suptitle(f"{layer}: {what} per class from ablating each cluster", fontsize=10)
    fig.colorbar(im, ax=axes.ravel().tolist(), label=what, shrink=0.8)
    fig.savefig(path, dpi=110)


# outcome kind -> draw(details rows, condition order, outcome spec, CI level, path)
DETAIL_FIGURES: dict[str, Callable[[pd.DataFrame, list[str], Any, float, Path], None]] = {
    "clusterability": clusterability_by_condition,
}
