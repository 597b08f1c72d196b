"""A figure any shape can use: each replicate's statistic per part, with the pooled mean and
its t interval (the replicate is the sample)."""

from __future__ import annotations

from pathlib import Path

import pandas as pd

__all__ = ["replicate_statistics"]


def replicate_statistics(
    replicates: pd.DataFrame, labels: dict[str, str], level: float, path: Path
) -> None:
    """One column per part: every replicate's ``statistic`` (dots) and their mean with its
    ``level`` t interval (bar), against 0."""
    import numpy as np
    from matplotlib.figure import Figure  # no pyplot: no global state, no backend to pick
    from scipy import stats

    parts = list(dict.fromkeys(replicates["part"]))
    fig = Figure(figsize=(max(3.5, 1.6 * len(parts) + 1.5), 4.0))
    ax = fig.add_subplot()
    for i, part in enumerate(parts):
        values = replicates.loc[replicates["part"] == part, "statistic"].dropna().to_numpy()
        jitter = np.linspace(-0.12, 0.12, len(values)) if len(values) > 1 else np.zeros(1)
        ax.scatter(i + jitter, values, s=16, color="0.55", zorder=2)
        if len(values) >= 2:
            mean, se = values.mean(), values.std(ddof=1) / np.sqrt(len(values))
            half = stats.t.ppf(0.5 + level / 2, len(values) - 1) * se
            ax.errorbar(i, mean, yerr=half, fmt="o", color="C0", capsize=5, zorder=3)
    ax.axhline(0, color="0.7", lw=0.8, zorder=0)
    ax.set_xticks(range(len(parts)), parts, rotation=20, ha="right", fontsize=8)
    ax.set_ylabel(labels.get("statistic", "statistic"))
    ax.set_title(f"per replicate, mean and {level:.0%} CI", fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
