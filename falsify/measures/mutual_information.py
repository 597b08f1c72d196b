"""Mutual-information selectivity: how much a unit's activation tells about the class label.

Morcos et al. (2018, *On the importance of single directions for generalization*, ICLR,
arXiv:1803.06959) used the mutual information between a unit's activation and the class label
alongside the class selectivity index, since the index looks only at the unit's most preferred
class; Amjad et al. (2018, *Understanding individual neuron importance using information
theory*, arXiv:1804.06679) rank units by the same quantity with activations discretized into
bins. The estimator here (docs/methods.md, "Mutual-information selectivity"):

- each unit's activations on the split are cut into ``bins`` equal-width bins between that
  unit's minimum and maximum on the split (the last bin closed, as ``numpy.histogram``);
- I(A; Y) = Σ_{b,c} p(b, c) · ln(p(b, c) / (p(b) p(c))), in nats, from the joint counts of bin b
  and class c (the plug-in estimate, what ``sklearn.metrics.mutual_info_score`` computes on the
  same bin indices);
- with ``correction: miller_madow`` each of the three entropies in I = H(A) + H(Y) − H(A, Y)
  gets the Miller–Madow term (m − 1) / (2N), m its number of occupied cells.

Streaming: two passes over the split in batches, the first for each unit's range, the second for
the counts ``[units, bins, classes]``; no activation is kept beyond its batch. The plug-in
estimate is biased upward by about (B − 1)(C − 1) / (2N) nats for B occupied bins, C classes and
N examples (Miller 1955; Panzeri & Treves 1996), so a unit independent of the label reads a
little above 0; Miller–Madow removes that first-order term. Units are read through the layer's
unit view (:mod:`falsify.units`), and a sequence task's class is its answer token, exactly as
for class selectivity.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import ClassVar, Literal

import torch
from pydantic import Field
from torch import nn
from torch.utils.data import Dataset as TorchDataset

from falsify.data.base import answer_labels
from falsify.data.stream import model_batches, with_labels
from falsify.hooks import capture
from falsify.hypothesis.kinds import UnitMeasureKind, register
from falsify.units import unit_view

__all__ = ["MutualInformation", "class_bin_counts", "mutual_information"]


def _batches(
    model: nn.Module, layer: str, x: torch.Tensor | TorchDataset, y: torch.Tensor, batch_size: int
) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    view = unit_view(model, layer)
    for xb, yb in model_batches(model, x, y, batch_size):
        with capture(model, layer) as outs:
            model(xb)
        yield view.read(outs[0]).to(torch.float64), yb  # [batch, units]


@torch.no_grad()
def class_bin_counts(
    model: nn.Module,
    layer: str,
    x: torch.Tensor | TorchDataset,
    y: torch.Tensor,
    n_classes: int,
    bins: int,
    batch_size: int = 1024,
) -> torch.Tensor:
    """Joint counts of activation bin and class per unit of ``layer``, ``[units, bins, classes]``.

    Bins are ``bins`` equal widths between each unit's minimum and maximum over ``x`` (found in
    a first streaming pass); a unit constant over ``x`` has all its examples in bin 0. ``x``
    may be a streamed split whose items carry the labels ``y`` (:mod:`falsify.data.stream`).
    """
    if len(x) == 0:
        raise ValueError("no examples to measure mutual information on")
    model.eval()
    ranges = [
        (act.min(dim=0).values, act.max(dim=0).values)
        for act, _ in _batches(model, layer, x, y, batch_size)
    ]
    lo = torch.stack([r[0] for r in ranges]).min(dim=0).values  # [units]
    hi = torch.stack([r[1] for r in ranges]).max(dim=0).values
    width = hi - lo
    scale = torch.where(width > 0, bins / width.clamp_min(1e-300), torch.zeros_like(width))
    counts = torch.zeros(lo.shape[0], bins * n_classes, dtype=torch.float64, device=lo.device)
    for act, yb in _batches(model, layer, x, y, batch_size):
        b = ((act - lo) * scale).floor().clamp(0, bins - 1).long()  # [batch, units]
        cell = b * n_classes + yb[:, None]
        counts.scatter_add_(1, cell.T, torch.ones_like(cell.T, dtype=torch.float64))
    return counts.reshape(-1, bins, n_classes)


def mutual_information(
    counts: torch.Tensor, correction: Literal["none", "miller_madow"] = "none"
) -> torch.Tensor:
    """I(bin; class) in nats from joint counts ``[units, bins, classes]`` → ``[units]``."""
    n = counts.sum(dim=(1, 2))  # [units]
    p = counts / n[:, None, None]
    p_bin = p.sum(dim=2, keepdim=True)
    p_class = p.sum(dim=1, keepdim=True)
    ratio = torch.where(p > 0, p / (p_bin * p_class), torch.ones_like(p))
    mi = (p * ratio.log()).sum(dim=(1, 2))
    if correction == "miller_madow":
        occupied_bins = (p_bin > 0).sum(dim=(1, 2))
        occupied_classes = (p_class > 0).sum(dim=(1, 2))
        occupied_cells = (p > 0).sum(dim=(1, 2))
        mi = mi + (occupied_bins + occupied_classes - occupied_cells - 1) / (2 * n)
    return mi


@register
class MutualInformation(UnitMeasureKind):
    """Mutual information (nats) between each unit's binned activation and the class label
    (Morcos et al. 2018; Amjad et al. 2018), docs/methods.md."""

    kind: Literal["mutual_information"]
    bins: int = Field(10, ge=2, le=1024)
    correction: Literal["none", "miller_madow"] = "none"

    label: ClassVar[str] = "mutual information with the class"
    streams: ClassVar[bool] = True
    docs: ClassVar[str] = "docs/methods.md"

    def measure(
        self, model: nn.Module, layer: str, x: torch.Tensor, y: torch.Tensor, n_classes: int
    ) -> torch.Tensor:
        # A sequence task's class is its answer token (docs/sequence-models.md).
        classes = answer_labels(y)
        counts = class_bin_counts(
            model, layer, with_labels(x, y, classes), classes, n_classes, self.bins
        )
        return mutual_information(counts, self.correction).to(torch.float32)
