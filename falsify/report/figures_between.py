"""The between-conditions figure: the outcome against the condition, with CIs."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
from scipy import stats

__all__ = ["outcome_by_condition"]


def _mean_ci(values: np.ndarray, level: float) -> tuple[float, float, float]:
    m = float(np.mean(values))
    sem = float(stats.sem(values)) if len(values) > 1 else 0.0
    if sem == 0:  # one model, or identical outcomes: the interval is the point
        return m, m, m
    lo, hi = stats.t.interval(level, len(values) - 1, loc=m, scale=sem)
    return m, float(lo), float(hi)


def outcome_by_condition(
    replicates: pd.DataFrame,
    order: list[str],
    labels: dict[str, str],
    level: float,
    path: Path,
) -> None:
    """Per condition and outcome: every seed's model (grey, seeds joined across conditions),
    the mean and its t CI at ``level``; a last panel shows the achieved mean class selectivity
    when it was recorded (a model with no unit layers has none).

    ``labels`` maps each outcome's name to its axis label; with several outcomes
    ``replicates`` has an ``outcome`` column.
    """
    from matplotlib.figure import Figure

    several = "outcome" in replicates.columns
    panels = [
        (replicates[replicates["outcome"] == name] if several else replicates, "statistic", label)
        for name, label in labels.items()
    ]
    shown = any(label.endswith("mean class selectivity") for label in labels.values())
    if "mean_selectivity" in replicates.columns and not shown:
        panels.append((panels[0][0], "mean_selectivity", "achieved mean class selectivity"))
    width = max(5.0, 1.1 * len(order) + 2.5)
    fig = Figure(figsize=(width * len(panels), 4.4))
    axes = fig.subplots(1, len(panels), squeeze=False)
    pos = {c: i for i, c in enumerate(order)}
    for ax, (df, col, ylabel) in zip(axes[0], panels, strict=True):
        for _, g in df.groupby("seed"):
            g = g.assign(x=g["part"].map(pos)).sort_values("x")
            ax.plot(g["x"], g[col], color="0.75", lw=0.8, marker="o", ms=3, zorder=1)
        for c in order:
            m, lo, hi = _mean_ci(df.loc[df["part"] == c, col].to_numpy(float), level)
            ax.errorbar(
                pos[c], m, yerr=[[m - lo], [hi - m]], fmt="s", color="C0", ms=6, capsize=4, zorder=2
            )
        ax.set_xticks(range(len(order)))
        ax.set_xticklabels([c.replace(", ", "\n") for c in order], fontsize=8)
        ax.set_ylabel(ylabel)
        ax.set_title(f"{ylabel}: mean and {100 * level:g}% CI per condition", fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
