"""Naturalistic corruptions of image tensors, at severities 0 (identity) to 5.

In the spirit of Hendrycks & Dietterich (2019, "Benchmarking neural network robustness to
common corruptions and perturbations", ICLR), implemented on tensors ``[n, channels, h, w]``
with values in [0, 1] (as ``digits`` is), so they apply to any image dataset without files:

- ``gaussian_noise``: add N(0, σ²) per pixel, σ = 0.08 · severity, then clip to [0, 1];
- ``blur``: Gaussian blur with σ = 0.3 · severity pixels (kernel radius ⌈3σ⌉, edges repeated);
- ``contrast``: pull every pixel towards its image's mean, x ← m + (x − m) · (1 − 0.15 ·
  severity).

The constants are chosen for 8×8 digits so that severity 5 costs a well-trained MLP a large
but not total share of its accuracy; severity 0 returns the input unchanged.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
import torch.nn.functional as F

__all__ = ["CORRUPTIONS", "MAX_SEVERITY", "corrupt"]

MAX_SEVERITY = 5


def _images(x: torch.Tensor) -> torch.Tensor:
    if x.dim() != 4:
        raise ValueError(
            f"corruptions need images [n, channels, height, width]; got shape {tuple(x.shape)}"
        )
    return x


def gaussian_noise(x: torch.Tensor, severity: int, generator: torch.Generator) -> torch.Tensor:
    if severity == 0:
        return x
    noise = torch.randn(x.shape, generator=generator).to(x)
    return (x + 0.08 * severity * noise).clamp(0.0, 1.0)


def blur(x: torch.Tensor, severity: int, generator: torch.Generator) -> torch.Tensor:
    if severity == 0:
        return x
    sigma = 0.3 * severity
    radius = max(1, math.ceil(3 * sigma))
    t = torch.arange(-radius, radius + 1, dtype=x.dtype, device=x.device)
    k1 = torch.exp(-(t**2) / (2 * sigma**2))
    k1 = k1 / k1.sum()
    c = x.shape[1]
    # Separable: blur rows, then columns; edge pixels are repeated outwards.
    h = F.conv2d(
        F.pad(x, (radius, radius, 0, 0), mode="replicate"),
        k1.view(1, 1, 1, -1).repeat(c, 1, 1, 1),
        groups=c,
    )
    v = F.conv2d(
        F.pad(h, (0, 0, radius, radius), mode="replicate"),
        k1.view(1, 1, -1, 1).repeat(c, 1, 1, 1),
        groups=c,
    )
    return v.clamp(0.0, 1.0)


def contrast(x: torch.Tensor, severity: int, generator: torch.Generator) -> torch.Tensor:
    if severity == 0:
        return x
    mean = x.mean(dim=(1, 2, 3), keepdim=True)
    return mean + (x - mean) * (1.0 - 0.15 * severity)


# name -> fn(images in [0, 1], severity 0..5, generator) -> images in [0, 1]
CORRUPTIONS: dict[str, Callable[[torch.Tensor, int, torch.Generator], torch.Tensor]] = {
    "gaussian_noise": gaussian_noise,
    "blur": blur,
    "contrast": contrast,
}


def corrupt(x: torch.Tensor, name: str, severity: int, generator: torch.Generator) -> torch.Tensor:
    """``x`` ``[n, c, h, w]`` corrupted by ``name`` at ``severity`` (0 returns ``x`` itself)."""
    if not 0 <= severity <= MAX_SEVERITY:
        raise ValueError(f"severity must be in 0..{MAX_SEVERITY}; got {severity}")
    return CORRUPTIONS[name](_images(x), severity, generator)
