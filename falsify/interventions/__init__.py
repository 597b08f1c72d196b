"""Interventions: causal manipulations of a model, always scoped by a context manager."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
from torch import nn

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
from falsify.interventions.hooks import capture, get_layer, hooked, layer_names

__all__ = [
    "UNIT_EFFECTS",
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
    "unit_effects",
]


def _unit_ablation(
    spec: Any, model: nn.Module, layer: str, x: torch.Tensor, y: torch.Tensor
) -> torch.Tensor:
    masks = single_unit_masks(n_units(model, layer, x), device=x.device)
    return ablation_effects(model, layer, x, y, masks, value=spec.value, metric=spec.metric)


# kind -> fn(spec, model, layer, x, y) -> [units]
UnitEffectFn = Callable[[Any, nn.Module, str, torch.Tensor, torch.Tensor], torch.Tensor]
UNIT_EFFECTS: dict[str, UnitEffectFn] = {"unit_ablation": _unit_ablation}


def unit_effects(
    spec: Any, model: nn.Module, layer: str, x: torch.Tensor, y: torch.Tensor
) -> torch.Tensor:
    """The effect of the per-unit intervention ``spec`` names on each unit of ``layer``."""
    return UNIT_EFFECTS[spec.kind](spec, model, layer, x, y)
