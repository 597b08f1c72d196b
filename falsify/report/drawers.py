"""The report's figure drawers, by the name a shape or outcome gives its figure.

A shape returns its figures as data (:class:`falsify.shapes.base.Figure`: a drawer name and its
arguments); the report draws them here, so nothing below the report imports matplotlib, and a
drawer's module (with matplotlib) is imported only when its first figure is drawn.
"""

from __future__ import annotations

import importlib
from pathlib import Path
from typing import Any

__all__ = ["DRAWERS", "draw"]

# figure name -> "module:function" drawing it as function(*args, png_path)
DRAWERS: dict[str, str] = {
    "association_scatter": "falsify.report.figures:association_scatter",
    "targeted_curves": "falsify.report.curves:targeted_curves",
    "outcome_by_condition": "falsify.report.figures_between:outcome_by_condition",
    "clusterability_baselines": "falsify.report.figures_modularity:clusterability_by_condition",
    "damage_heatmaps": "falsify.report.figures_modularity:damage_heatmaps",
    "replicate_statistics": "falsify.report.figures_replicates:replicate_statistics",
}


def draw(name: str, args: tuple[Any, ...], path: Path) -> None:
    """Draw the figure ``name`` with ``args`` into the PNG at ``path``."""
    module, _, function = DRAWERS[name].partition(":")
    getattr(importlib.import_module(module), function)(*args, path)
