"""A small convolutional network with named blocks, for image datasets.

Block ``i`` (1-based) is the module ``conv{i}``: 3×3 convolution (padding 1) → (BatchNorm) →
ReLU → 2×2 max pooling (while the image is at least 2 pixels wide) → (Dropout). Its output is
``[batch, channels, h, w]`` and non-negative, so a channel is a unit: class selectivity averages
each channel over space and ablation clamps a whole channel, as the blocks' declared unit view
(:data:`falsify.units.CHANNELS`) says. ``head`` is the linear read-out of the flattened last block.
"""

from __future__ import annotations

from typing import Annotated, ClassVar, Literal

import torch
from pydantic import Field
from torch import nn

from falsify.errors import LocatedError
from falsify.hypothesis.kinds import ArchitectureKind, register
from falsify.units import CHANNELS

__all__ = ["CNN", "ConvBlock", "build_cnn"]


class ConvBlock(nn.Module):
    """Conv3×3 → (BatchNorm) → ReLU → (MaxPool 2×2) → (Dropout)."""

    def __init__(self, c_in: int, c_out: int, batch_norm: bool, dropout: float, pool: bool) -> None:
        super().__init__()
        self.conv = nn.Conv2d(c_in, c_out, kernel_size=3, padding=1)
        self.norm: nn.Module = nn.BatchNorm2d(c_out) if batch_norm else nn.Identity()
        self.act = nn.ReLU()
        self.pool: nn.Module = nn.MaxPool2d(2) if pool else nn.Identity()
        self.drop: nn.Module = nn.Dropout(dropout) if dropout > 0 else nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # [B, c_in, H, W] -> [B, c_out, H', W']
        return self.drop(self.pool(self.act(self.norm(self.conv(x)))))


class CNN(nn.Module):
    def __init__(
        self,
        input_shape: tuple[int, int, int],
        channels: tuple[int, ...],
        n_classes: int,
        batch_norm: bool = False,
        dropout: float = 0.0,
    ) -> None:
        super().__init__()
        c, h, w = input_shape
        for i, c_out in enumerate(channels, start=1):
            pool = min(h, w) >= 2
            self.add_module(f"conv{i}", ConvBlock(c, c_out, batch_norm, dropout, pool))
            c, h, w = c_out, (h // 2 if pool else h), (w // 2 if pool else w)
        self.n_blocks = len(channels)
        # Block outputs [batch, channels, h, w]: a unit is a channel, averaged over space.
        self.unit_views = {f"conv{i}": CHANNELS for i in range(1, len(channels) + 1)}
        self.flatten = nn.Flatten()
        self.head = nn.Linear(c * h * w, n_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # [B, C, H, W] -> [B, classes]
        for i in range(1, self.n_blocks + 1):
            x = getattr(self, f"conv{i}")(x)
        return self.head(self.flatten(x))


@register
class CNNSpec(ArchitectureKind):
    """A small conv net; block ``i`` is ``conv{i}`` (conv → ReLU → 2×2 max pool, post-ReLU)."""

    kind: Literal["cnn"]
    channels: tuple[Annotated[int, Field(ge=1)], ...] = Field((16, 32), min_length=1)
    batch_norm: bool = False
    dropout: float = Field(0.0, ge=0.0, lt=1.0)

    label: ClassVar[str] = "small conv net"
    docs: ClassVar[str] = "docs/file-format.md"
    ensemble: ClassVar[bool] = True

    def build(self, input_shape: tuple[int, ...], n_classes: int) -> CNN:
        return build_cnn(self, input_shape, n_classes)


def build_cnn(spec: CNNSpec, input_shape: tuple[int, ...], n_classes: int) -> CNN:
    if len(input_shape) != 3:
        raise LocatedError(
            ("population", "model", "kind"),
            "an architecture for the data's inputs (a cnn needs images [channels, height, "
            "width]; kind: mlp takes inputs of any shape)",
            f"cnn for inputs of shape {list(input_shape)}",
        )
    shape = (int(input_shape[0]), int(input_shape[1]), int(input_shape[2]))
    return CNN(shape, spec.channels, n_classes, spec.batch_norm, spec.dropout)
