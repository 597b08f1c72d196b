"""Measures: quantities read off a trained model without changing it, looked up by ``kind``."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
from torch import nn

from falsify.measures.attribution import ATTRIBUTION_METHODS, attribution_scores
from falsify.measures.selectivity import (
    class_conditional_means,
    selectivity_index,
    unit_activations,
)

__all__ = [
    "ATTRIBUTION_METHODS",
    "UNIT_MEASURES",
    "attribution_scores",
    "class_conditional_means",
    "measure_units",
    "selectivity_index",
    "unit_activations",
]


def _class_selectivity(
    spec: Any, model: nn.Module, layer: str, x: torch.Tensor, y: torch.Tensor, n_classes: int
) -> torch.Tensor:
    means = class_conditional_means(model, layer, x, y, n_classes)
    return selectivity_index(means, spec.epsilon)


def _attribution(
    spec: Any, model: nn.Module, layer: str, x: torch.Tensor, y: torch.Tensor, n_classes: int
) -> torch.Tensor:
    return attribution_scores(
        spec.kind,
        model,
        layer,
        x,
        y,
        n_steps=getattr(spec, "n_steps", 32),
        baseline=getattr(spec, "baseline", "zero"),
    )


# kind -> fn(spec, model, layer, x, y, n_classes) -> [units]
UnitMeasureFn = Callable[[Any, nn.Module, str, torch.Tensor, torch.Tensor, int], torch.Tensor]
UNIT_MEASURES: dict[str, UnitMeasureFn] = {
    "class_selectivity": _class_selectivity,
    **dict.fromkeys(ATTRIBUTION_METHODS, _attribution),
}


def measure_units(
    spec: Any, model: nn.Module, layer: str, x: torch.Tensor, y: torch.Tensor, n_classes: int
) -> torch.Tensor:
    """The per-unit measure ``spec`` names, for every unit of ``layer``: ``[units]``."""
    return UNIT_MEASURES[spec.kind](spec, model, layer, x, y, n_classes)
