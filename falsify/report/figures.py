"""Figures for reports: PNG files drawn on matplotlib ``Figure`` objects.

Every figure module draws with matplotlib's object-oriented API (no pyplot, no backend
selection: ``savefig`` to a ``.png`` renders with Agg) and imports matplotlib inside its drawing
functions, so importing falsify changes no global state and loads no plotting library.
"""

from __future__ import annotations

from pathlib import Path

import pandas as pd

__all__ = ["association_scatter"]


def association_scatter(
    tidy: pd.DataFrame,
    parts: pd.DataFrame,
    labels: dict[str, str],
    path: Path,
) -> None:
    """x vs y for every unit, one panel per layer, coloured by replicate (seed)."""
    from matplotlib import colormaps
    from matplotlib.figure import Figure

    layers = list(dict.fromkeys(tidy["layer"]))
    fig = Figure(figsize=(5.2 * len(layers), 4.4))
    axes = fig.subplots(1, len(layers), squeeze=False, sharey=True)
    seeds = list(dict.fromkeys(tidy["seed"]))
    cmap = colormaps["tab10" if len(seeds) <= 10 else "tab20"]
    for ax, layer in zip(axes[0], layers, strict=True):
        sub = tidy[tidy["layer"] == layer]
        for i, seed in enumerate(seeds):
            s = sub[sub["seed"] == seed]
            ax.scatter(
                s["x"], s["y"], s=12, alpha=0.6, color=cmap(i % cmap.N), label=f"seed {seed}"
            )
        row = parts[parts["part"] == layer].iloc[0]
        ax.set_title(
            f"{layer}: pooled {labels['statistic']} = {row.estimate:.2f} "
            f"[{row.ci_low:.2f}, {row.ci_high:.2f}]",
            fontsize=10,
        )
        ax.set_xlabel(labels["x"])
        ax.axhline(0, color="0.7", lw=0.8, zorder=0)
    axes[0][0].set_ylabel(labels["y"])
    axes[0][-1].legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1), frameon=False)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
