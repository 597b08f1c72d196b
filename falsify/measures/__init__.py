"""Measures: quantities read off a trained model without changing it.

Each per-unit measure and model-level outcome is a registered kind in its family's module
(``selectivity``, ``attribution``, ``model_level``); this package re-exports the machinery.
"""

from __future__ import annotations

from falsify.measures.attribution import ATTRIBUTION_METHODS, attribution_scores
from falsify.measures.selectivity import (
    class_conditional_means,
    selectivity_index,
    unit_activations,
)

__all__ = [
    "ATTRIBUTION_METHODS",
    "attribution_scores",
    "class_conditional_means",
    "selectivity_index",
    "unit_activations",
]
