"""CIFAR-style ResNet-20 (He, Zhang, Ren & Sun 2016, "Deep residual learning for image
recognition", CVPR, §4.2).

A 3×3 convolution with ``w`` channels, then three stages of three basic blocks with ``w``,
``2w`` and ``4w`` channels (16 / 32 / 64 in the paper), the second and third stage halving the
resolution in their first block, then global average pooling and a linear classifier:
6·3 + 2 = 20 weighted layers. Shortcuts are the paper's option A for CIFAR: the identity, and
where the shape changes, the input subsampled by 2 and zero-padded with the missing channels, so
the shortcut has no parameters.

Named layers (``named_modules()`` paths) for measures and interventions: ``stem`` (post-ReLU),
``layer{s}.{b}`` for stage ``s`` ∈ {1, 2, 3} and block ``b`` ∈ {0, 1, 2}, whose output is the
block's post-ReLU output ``relu(F(x) + shortcut(x))`` of shape ``[batch, channels, H, W]`` (a
unit is a channel), ``pool`` (``[batch, 4w]``) and ``head``. Inner modules such as
``layer1.0.conv1`` can be named too.
"""

from __future__ import annotations

from typing import ClassVar, Literal

import torch
from pydantic import Field
from torch import nn
from torch.nn import functional as F

from falsify._imports import UserCodeError
from falsify.hypothesis.kinds import ArchitectureKind, register
from falsify.units import CHANNELS

__all__ = ["BasicBlock", "ResNet20", "build_resnet20"]


class BasicBlock(nn.Module):
    """conv3×3 → BN → ReLU → conv3×3 → BN, plus the option-A shortcut, then ReLU."""

    def __init__(self, c_in: int, c_out: int, stride: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(c_in, c_out, 3, stride=stride, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(c_out)
        self.relu1 = nn.ReLU()
        self.conv2 = nn.Conv2d(c_out, c_out, 3, stride=1, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(c_out)
        self.relu2 = nn.ReLU()
        self.stride = stride
        self.pad = c_out - c_in

    def shortcut(self, x: torch.Tensor) -> torch.Tensor:
        if self.stride == 1 and self.pad == 0:
            return x
        x = x[:, :, :: self.stride, :: self.stride]
        return F.pad(x, (0, 0, 0, 0, self.pad // 2, self.pad - self.pad // 2))

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # [B, c_in, H, W] -> [B, c_out, H/s, W/s]
        return self.after_conv1(x, self.conv1(x))

    def after_conv1(self, x: torch.Tensor, c1: torch.Tensor) -> torch.Tensor:
        """The block's output from its input ``x`` and ``c1 = conv1(x)``; the ablation engine
        passes an updated ``c1`` (its ``conv_delta`` path, docs/performance.md)."""
        out = self.relu1(self.bn1(c1))
        out = self.bn2(self.conv2(out))
        return self.relu2(out + self.shortcut(x))


class _Stem(nn.Module):
    def __init__(self, c_in: int, c_out: int) -> None:
        super().__init__()
        self.conv = nn.Conv2d(c_in, c_out, 3, padding=1, bias=False)
        self.bn = nn.BatchNorm2d(c_out)
        self.relu = nn.ReLU()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.relu(self.bn(self.conv(x)))


class _GlobalAvgPool(nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:  # [B, C, H, W] -> [B, C]
        return x.mean(dim=(2, 3))


class ResNet20(nn.Module):
    def __init__(self, in_channels: int, n_classes: int, width: int = 16) -> None:
        super().__init__()
        self.stem = _Stem(in_channels, width)
        c = width
        for s, c_out in enumerate((width, 2 * width, 4 * width), start=1):
            blocks = []
            for b in range(3):
                blocks.append(BasicBlock(c, c_out, stride=2 if (b == 0 and s > 1) else 1))
                c = c_out
            self.add_module(f"layer{s}", nn.Sequential(*blocks))
        # Block outputs (post-ReLU): the layers whose channels are units.
        self.unit_views = {f"layer{s}.{b}": CHANNELS for s in (1, 2, 3) for b in range(3)}
        self.pool = _GlobalAvgPool()
        self.head = nn.Linear(c, n_classes)
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # [B, C, H, W] -> [B, classes]
        h = self.layer3(self.layer2(self.layer1(self.stem(x))))
        return self.head(self.pool(h))


@register
class ResNet20Spec(ArchitectureKind):
    """CIFAR-style ResNet-20 (He et al. 2016, §4.2); see :mod:`falsify.models.resnet`."""

    kind: Literal["resnet20"]
    width: int = Field(16, ge=1)  # channels of the first stage; the paper's 16 / 32 / 64

    label: ClassVar[str] = "ResNet-20"
    docs: ClassVar[str] = "docs/file-format.md"
    ensemble: ClassVar[bool] = True

    def build(self, input_shape: tuple[int, ...], n_classes: int) -> ResNet20:
        return build_resnet20(self, input_shape, n_classes)


def build_resnet20(spec: ResNet20Spec, input_shape: tuple[int, ...], n_classes: int) -> ResNet20:
    if len(input_shape) != 3:
        raise UserCodeError(
            ("population", "model", "kind"),
            "an architecture for the data's inputs (resnet20 takes images [channels, H, W])",
            f"resnet20 for inputs of shape {list(input_shape)}",
        )
    return ResNet20(input_shape[0], n_classes, spec.width)
