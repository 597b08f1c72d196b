"""The report's figure drawers, by the name a shape or outcome gives its figure.

A shape returns its figures as data (:class:`falsify.shapes.base.Figure`: a drawer name and its
arguments); the report draws them here, so nothing below the report imports matplotlib.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

__all__ = ["DRAWERS", "draw"]


def _drawers() -> dict[str, Callable[..., None]]:
    # Imported when the first figure is drawn: matplotlib loads only then.
    from falsify.report.curves import targeted_curves
    from falsify.report.figures import association_scatter
    from falsify.report.figures_between import outcome_by_condition
    from falsify.report.figures_modularity import clusterability_by_condition, damage_heatmaps

    return {
        "association_scatter": association_scatter,
        "targeted_curves": targeted_curves,
        "outcome_by_condition": outcome_by_condition,
        "clusterability_baselines": clusterability_by_condition,
        "damage_heatmaps": damage_heatmaps,
    }


# The names a figure may have (the contract tests check every shape's and outcome's figure
# is one of them).
DRAWERS = (
    "association_scatter",
    "targeted_curves",
    "outcome_by_condition",
    "clusterability_baselines",
    "damage_heatmaps",
)


def draw(name: str, args: tuple[Any, ...], path: Path) -> None:
    """Draw the figure ``name`` with ``args`` into the PNG at ``path``."""
    _drawers()[name](*args, path)
