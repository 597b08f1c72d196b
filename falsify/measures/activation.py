"""Mean activation of each unit: how strongly a unit responds, whatever the class; and the
activation collection that reads a streamed dataset in batches.

Morcos et al. (2018) report that a unit's mean activation, like its class selectivity, says
little about its importance under ablation; it is also the quantity a random control group is
matched on when magnitude could confound a targeted-vs-random comparison. Read through the
layer's unit view (:mod:`falsify.units`), so a conv channel is averaged over space first.

:func:`collect_unit_activations` and :func:`collect_class_means` read the same quantities from a
map-style torch Dataset streamed in batches (:mod:`falsify.data.stream`; docs/performance.md,
"Data that does not fit in memory"): only ``[examples, units]`` (or ``[classes, units]``) is
held, never the inputs or the layer's full output.
"""

from __future__ import annotations

from typing import ClassVar, Literal

import torch
from torch import nn
from torch.utils.data import Dataset as TorchDataset

from falsify.data.stream import Source, batches, is_stream
from falsify.hypothesis.kinds import UnitMeasureKind, register
from falsify.measures.selectivity import unit_activations
from falsify.selectivity import class_conditional_means

__all__ = [
    "MeanActivation",
    "collect_class_means",
    "collect_unit_activations",
    "mean_activations",
]


@register
class MeanActivation(UnitMeasureKind):
    """Mean over the evaluation split of each unit's activation: ``[units]``."""

    kind: Literal["mean_activation"]

    label: ClassVar[str] = "mean activation"
    docs: ClassVar[str] = "docs/methods.md"
    streams: ClassVar[bool] = True

    def measure(
        self, model: nn.Module, layer: str, x: torch.Tensor, y: torch.Tensor, n_classes: int
    ) -> torch.Tensor:
        return mean_activations(model, layer, x)


def mean_activations(model: nn.Module, layer: str, x: torch.Tensor | TorchDataset) -> torch.Tensor:
    """``[units]``: each unit's mean activation over ``x``, a tensor or a streamed split (its
    ``[examples, units]`` collected batch by batch onto the model's device, then averaged)."""
    if is_stream(x):
        device = next(model.parameters()).device
        return collect_unit_activations(model, layer, x, device=device).mean(dim=0)
    return unit_activations(model, layer, x).mean(dim=0)


@torch.no_grad()
def collect_unit_activations(
    model: nn.Module,
    layer: str,
    source: Source,
    *,
    batch_size: int = 1024,
    device: torch.device | None = None,
) -> torch.Tensor:
    """``[examples, units]``: each example's units of ``layer`` (its unit view), batch by batch
    over ``source``, a ``(x, y)`` pair of tensors or a map-style torch Dataset, on ``device``."""
    model.eval()
    parts = [
        unit_activations(model, layer, xb) for xb, _ in batches(source, batch_size, device=device)
    ]
    if not parts:
        raise ValueError("no examples to collect activations on")
    return torch.cat(parts)


@torch.no_grad()
def collect_class_means(
    model: nn.Module,
    layer: str,
    source: Source,
    n_classes: int,
    *,
    batch_size: int = 1024,
    device: torch.device | None = None,
) -> torch.Tensor:
    """``[n_classes, units]``: :func:`falsify.selectivity.class_conditional_means` over a
    streamed ``source``, the input of the class selectivity index."""
    parts = batches(source, batch_size, device=device)
    return class_conditional_means(model, layer, parts, None, n_classes)
