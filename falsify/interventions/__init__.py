"""Interventions: causal manipulations of a model, always scoped by a context manager.

Each per-unit effect is a registered kind (``ablation.UnitAblationEffect``); this package
re-exports the machinery: hooks, the ablation engine, groups.
"""

from __future__ import annotations

from falsify.hooks import capture, get_layer, hooked, layer_names
from falsify.interventions.ablation import (
    ablated,
    ablation_effects,
    class_ablation_effects,
    fill_values,
    n_units,
    resample_sources,
    single_unit_masks,
)
from falsify.interventions.groups import cluster_masks, random_masks, resolve_k, top_k_masks

__all__ = [
    "ablated",
    "ablation_effects",
    "capture",
    "class_ablation_effects",
    "cluster_masks",
    "fill_values",
    "get_layer",
    "hooked",
    "layer_names",
    "n_units",
    "random_masks",
    "resample_sources",
    "resolve_k",
    "single_unit_masks",
    "top_k_masks",
]
