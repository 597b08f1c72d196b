"""Class selectivity as a per-unit measure, and the per-unit activations of a layer.

The index itself (Morcos et al. 2018; Leavitt & Morcos 2021, PRODUCT.md §6) lives in
:mod:`falsify.selectivity`, shared with training; units are read through the layer's unit view
(:mod:`falsify.units`).
"""

from __future__ import annotations

import torch
from torch import nn

from falsify.interventions.hooks import capture
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
