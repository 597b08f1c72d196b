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

__all__ = ["BasicBlock", "FoldedBlock", "FoldedConv", "ResNet20", "build_resnet20"]

# An output map of at most this many positions makes a stride-1 conv a dense matrix product: on a
# 2×2 map every kernel tap that is not padding is one entry of the matrix, and one product of
# [rows, C·H·W] by [C·H·W, C'·H'·W'] took half the time of the conv call (docs/performance.md).
_DENSE_POSITIONS = 4


class FoldedConv:
    """``bn(conv(x))`` in evaluation mode as one affine map: the batch norm's scale folded into
    the conv's weights and its shift into a bias (equal to the two modules up to float rounding).
    Where the output map is small (:data:`_DENSE_POSITIONS`) it runs as a dense matrix product."""

    def __init__(self, conv: nn.Conv2d, bn: nn.BatchNorm2d) -> None:
        assert bn.running_var is not None and bn.running_mean is not None
        scale = torch.rsqrt(bn.running_var + bn.eps)
        if bn.weight is not None:
            scale = scale * bn.weight
        shift = -bn.running_mean * scale
        if bn.bias is not None:
            shift = shift + bn.bias
        if conv.bias is not None:
            shift = shift + conv.bias * scale
        self.weight = (conv.weight * scale[:, None, None, None]).detach()
        self.bias = shift.detach()
        self.kernel_size, self.stride = conv.kernel_size, conv.stride
        self.padding, self.dilation = conv.padding, conv.dilation
        self._dense: dict[tuple[int, ...], tuple[torch.Tensor, torch.Tensor, tuple[int, ...]]] = {}

    def _conv(self, x: torch.Tensor, bias: torch.Tensor | None) -> torch.Tensor:
        return F.conv2d(x, self.weight, bias, self.stride, self.padding, self.dilation)  # type: ignore[arg-type]

    def __call__(self, x: torch.Tensor) -> torch.Tensor:  # [B, C, H, W] -> [B, C', H', W']
        key = tuple(x.shape[1:])
        if key not in self._dense:
            c, h, w = key
            ones = torch.eye(c * h * w, dtype=x.dtype, device=x.device).view(-1, c, h, w)
            basis = self._conv(ones, None)  # row i: the output of the i-th one-hot input
            dense = self.stride == (1, 1) and basis.shape[2] * basis.shape[3] <= _DENSE_POSITIONS
            if not dense:
                self._dense[key] = (torch.empty(0), torch.empty(0), ())
            else:
                bias = self.bias[:, None].expand(-1, basis.shape[2] * basis.shape[3]).flatten()
                self._dense[key] = (basis.flatten(1), bias.contiguous(), tuple(basis.shape[1:]))
        matrix, bias, shape = self._dense[key]
        if not shape:
            return self._conv(x, self.bias)
        return torch.addmm(bias, x.flatten(1), matrix).view(len(x), *shape)


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

    def folded(self) -> FoldedBlock:
        """The block in evaluation mode with its batch norms folded into the convs (the ablation
        engine's ``conv_delta`` path; equal to the block up to float rounding)."""
        return FoldedBlock(self)


class FoldedBlock:
    """A :class:`BasicBlock` in evaluation mode, ``conv1``/``bn1`` and ``conv2``/``bn2`` each one
    :class:`FoldedConv`; ``after_conv1(x, c1)`` takes ``c1 = bn1(conv1(x))``."""

    def __init__(self, block: BasicBlock) -> None:
        self.conv1 = FoldedConv(block.conv1, block.bn1)
        self.conv2 = FoldedConv(block.conv2, block.bn2)
        self.shortcut = block.shortcut

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        return self.after_conv1(x, self.conv1(x))

    def after_conv1(self, x: torch.Tensor, c1: torch.Tensor) -> torch.Tensor:
        out = self.conv2(c1.relu())
        return out.add_(self.shortcut(x)).relu_()


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
