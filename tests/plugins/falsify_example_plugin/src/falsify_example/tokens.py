"""An architecture whose unit layer is token-shaped, ``[batch, tokens, channels]``.

The input is cut into ``tokens`` equal pieces; each piece is embedded by one shared linear map
and a ReLU (the ``mix`` layer, units on the last axis), the tokens are averaged and read out.
It declares ``mix``'s unit view (axis −1, mean over tokens), so falsify reads its channels as
units, never its positions.
"""

from __future__ import annotations

import math
from typing import ClassVar, Literal

import torch
from pydantic import Field
from torch import nn

from falsify.errors import LocatedError
from falsify.hypothesis.kinds import ArchitectureKind
from falsify.units import UnitView

__all__ = ["TokenMixer", "TokenMixerSpec"]


class TokenMixer(nn.Module):
    def __init__(self, in_features: int, tokens: int, width: int, n_classes: int) -> None:
        super().__init__()
        self.tokens = tokens
        self.embed = nn.Linear(in_features // tokens, width)
        self.mix = nn.ReLU()
        self.head = nn.Linear(width, n_classes)
        self.unit_views = {"mix": UnitView(axis=-1)}

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # [batch, *input] -> [batch, classes]
        h = x.flatten(1).unflatten(1, (self.tokens, -1))  # [batch, tokens, piece]
        h = self.mix(self.embed(h))  # [batch, tokens, width]
        return self.head(h.mean(dim=1))


class TokenMixerSpec(ArchitectureKind):
    """``kind: token_mixer``: ``tokens`` pieces of the input, ``width`` channels per token."""

    kind: Literal["token_mixer"]
    tokens: int = Field(8, ge=1)
    width: int = Field(16, ge=1)

    label: ClassVar[str] = "token mixer"
    docs: ClassVar[str] = "README.md"

    def build(self, input_shape: tuple[int, ...], n_classes: int) -> TokenMixer:
        d = math.prod(input_shape)
        if d % self.tokens:
            raise LocatedError(
                ("population", "model", "tokens"),
                f"a divisor of the input size {d}",
                self.tokens,
            )
        return TokenMixer(d, self.tokens, self.width, n_classes)
