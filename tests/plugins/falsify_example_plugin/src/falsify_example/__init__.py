"""A per-unit measure from outside falsify: how often each unit is active.

The activation rate of a unit is the fraction of inputs on which its (post-ReLU) activation is
above ``threshold`` — a common proxy for how "dead" or "dense" a unit is.
"""

from __future__ import annotations

from typing import ClassVar, Literal

import torch
from pydantic import Field
from torch import nn

from falsify.hypothesis.kinds import UnitMeasureKind
from falsify.measures.selectivity import unit_activations

__all__ = ["ActivationRate"]


class ActivationRate(UnitMeasureKind):
    """Fraction of inputs on which each unit's activation exceeds ``threshold``."""

    kind: Literal["activation_rate"]
    threshold: float = Field(0.0, ge=0.0)

    label: ClassVar[str] = "activation rate"
    docs: ClassVar[str] = "README.md"

    def measure(
        self, model: nn.Module, layer: str, x: torch.Tensor, y: torch.Tensor, n_classes: int
    ) -> torch.Tensor:
        acts = unit_activations(model, layer, x)  # [batch, units]
        return (acts > self.threshold).float().mean(dim=0)
