"""Class selectivity as a per-unit measure, and the per-unit activations of a layer.

The index itself (Morcos et al. 2018; Leavitt & Morcos 2021, PRODUCT.md §6) lives in
:mod:`falsify.selectivity`, shared with training; units are read through the layer's unit view
(:mod:`falsify.units`).
"""

from __future__ import annotations

from typing import ClassVar, Literal

import torch
from pydantic import Field
from torch import nn

from falsify.data.base import answer_labels
from falsify.data.stream import is_stream, model_batches, with_labels
from falsify.hooks import capture
from falsify.hypothesis.kinds import UnitMeasureKind, register
from falsify.selectivity import class_conditional_means, mean_selectivity, selectivity_index
from falsify.units import unit_view

__all__ = ["class_conditional_means", "mean_selectivity", "selectivity_index", "unit_activations"]


@torch.no_grad()
def unit_activations(model: nn.Module, layer: str, x: torch.Tensor) -> torch.Tensor:
    """Per-unit activations of ``layer`` on ``x``, ``[batch, units]``, read through its view."""
    model.eval()
    view = unit_view(model, layer)
    with capture(model, layer) as outs:
        model(x)
    return view.read(outs[0])


@register
class ClassSelectivity(UnitMeasureKind):
    """Class selectivity index of each unit (Morcos et al. 2018), PRODUCT.md §6."""

    kind: Literal["class_selectivity"]
    epsilon: float = Field(1e-7, gt=0.0)

    label: ClassVar[str] = "class selectivity index"
    streams: ClassVar[bool] = True
    docs: ClassVar[str] = "docs/methods.md"

    def measure(
        self, model: nn.Module, layer: str, x: torch.Tensor, y: torch.Tensor, n_classes: int
    ) -> torch.Tensor:
        # A sequence task's class is its answer token (docs/sequence-models.md).
        classes = answer_labels(y)
        if is_stream(x):
            parts = model_batches(model, with_labels(x, y, classes), classes)
            means = class_conditional_means(model, layer, parts, None, n_classes)
        else:
            means = class_conditional_means(model, layer, x, classes, n_classes)
        return selectivity_index(means, self.epsilon)
