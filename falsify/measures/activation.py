"""Mean activation of each unit: how strongly a unit responds, whatever the class.

Morcos et al. (2018) report that a unit's mean activation, like its class selectivity, says
little about its importance under ablation; it is also the quantity a random control group is
matched on when magnitude could confound a targeted-vs-random comparison. Read through the
layer's unit view (:mod:`falsify.units`), so a conv channel is averaged over space first.
"""

from __future__ import annotations

from typing import ClassVar, Literal

import torch
from torch import nn

from falsify.hypothesis.kinds import UnitMeasureKind, register
from falsify.measures.selectivity import unit_activations

__all__ = ["MeanActivation"]


@register
class MeanActivation(UnitMeasureKind):
    """Mean over the evaluation split of each unit's activation: ``[units]``."""

    kind: Literal["mean_activation"]

    label: ClassVar[str] = "mean activation"
    docs: ClassVar[str] = "docs/methods.md"

    def measure(
        self, model: nn.Module, layer: str, x: torch.Tensor, y: torch.Tensor, n_classes: int
    ) -> torch.Tensor:
        return unit_activations(model, layer, x).mean(dim=0)
