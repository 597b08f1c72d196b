"""Multilayer perceptron with named hidden blocks.

Hidden block ``i`` (1-based) is the module ``hidden{i}``; its output is the post-ReLU activation
(after dropout, which is the identity at evaluation). Measures and interventions name layers by
these ``named_modules()`` paths: ``hidden1``, ``hidden2``, …; ``head`` is the output layer.
"""

from __future__ import annotations

import itertools
import math
from typing import Annotated, ClassVar, Literal

import torch
from pydantic import Field
from torch import nn

from falsify.hypothesis.kinds import ArchitectureKind, register
from falsify.units import CHANNELS

__all__ = ["MLP", "DenseBlock", "build_mlp"]


class DenseBlock(nn.Module):
    """Linear → (BatchNorm) → ReLU → (Dropout)."""

    def __init__(self, d_in: int, d_out: int, batch_norm: bool, dropout: float) -> None:
        super().__init__()
        self.linear = nn.Linear(d_in, d_out)
        self.norm: nn.Module = nn.BatchNorm1d(d_out) if batch_norm else nn.Identity()
        self.act = nn.ReLU()
        self.drop: nn.Module = nn.Dropout(dropout) if dropout > 0 else nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # [batch, d_in] -> [batch, d_out]
        return self.drop(self.act(self.norm(self.linear(x))))


class MLP(nn.Module):
    def __init__(
        self,
        in_features: int,
        hidden: tuple[int, ...],
        n_classes: int,
        batch_norm: bool = False,
        dropout: float = 0.0,
    ) -> None:
        super().__init__()
        self.flatten = nn.Flatten()
        widths = (in_features, *hidden)
        for i, (a, b) in enumerate(itertools.pairwise(widths), start=1):
            self.add_module(f"hidden{i}", DenseBlock(a, b, batch_norm, dropout))
        self.n_hidden = len(hidden)
        # The unit layers measures and training-time regularizers read (by default, all):
        # each block's output [batch, units].
        self.unit_views = {f"hidden{i}": CHANNELS for i in range(1, len(hidden) + 1)}
        self.head = nn.Linear(widths[-1], n_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # [batch, *input] -> [batch, classes]
        h = self.flatten(x)
        for i in range(1, self.n_hidden + 1):
            h = getattr(self, f"hidden{i}")(h)
        return self.head(h)


@register
class MLPSpec(ArchitectureKind):
    """A multilayer perceptron; hidden block ``i`` is named ``hidden{i}`` (post-ReLU output)."""

    kind: Literal["mlp"]
    hidden: tuple[Annotated[int, Field(ge=1)], ...] = Field((64, 64), min_length=1)
    batch_norm: bool = False
    dropout: float = Field(0.0, ge=0.0, lt=1.0)

    label: ClassVar[str] = "multilayer perceptron"
    docs: ClassVar[str] = "docs/file-format.md"
    ensemble: ClassVar[bool] = True

    def build(self, input_shape: tuple[int, ...], n_classes: int) -> MLP:
        return build_mlp(self, input_shape, n_classes)


def build_mlp(spec: MLPSpec, input_shape: tuple[int, ...], n_classes: int) -> MLP:
    return MLP(math.prod(input_shape), spec.hidden, n_classes, spec.batch_norm, spec.dropout)
