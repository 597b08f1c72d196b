"""Unit and group ablation (Morcos et al. 2018): the effect on accuracy or loss of clamping units.

An ablation sets some units of a layer to a fill value (0, or each unit's mean activation) for
every input. :func:`ablation_effects` turns the summed per-example statistics that the sweep
engine (:mod:`falsify.interventions.engine`) computes for many ablations at once into effects;
``batched=False`` runs the plain reference loop instead, one hooked forward per ablation, which
works for any model and is what the engine is tested against.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any, ClassVar, Literal

import torch
from torch import nn

from falsify.hypothesis.kinds import UnitEffectKind, register
from falsify.interventions.engine import (
    DEFAULT_MAX_BYTES,
    RowStats,
    Strategy,
    ablation_sweep,
    row_stats_correct_ce,
)
from falsify.interventions.hooks import hooked

__all__ = [
    "ablated",
    "ablation_effects",
    "class_ablation_effects",
    "fill_values",
    "single_unit_masks",
]

Metric = Literal["accuracy_drop", "loss_increase"]


def single_unit_masks(n_units: int, device: torch.device | None = None) -> torch.Tensor:
    """``[n_units, n_units]`` boolean masks, row ``u`` ablating unit ``u`` alone."""
    return torch.eye(n_units, dtype=torch.bool, device=device)


@torch.no_grad()
def fill_values(
    model: nn.Module, layer: str, x: torch.Tensor, value: Literal["zero", "mean"]
) -> torch.Tensor:
    """The value each unit is clamped to, ``[units, *spatial]``: zeros, or the mean over ``x``."""
    model.eval()
    outs: list[torch.Tensor] = []
    with hooked(model, {layer: lambda _m, _i, o: outs.append(o.detach())}):
        model(x[:1] if value == "zero" else x)
    if value == "zero":
        return torch.zeros_like(outs[0][0])
    return outs[0].mean(dim=0)


@contextmanager
def ablated(
    model: nn.Module, layer: str, mask: torch.Tensor, fill: torch.Tensor
) -> Iterator[nn.Module]:
    """Within the block, ``model`` runs with the units in ``mask`` ``[units]`` set to ``fill``."""

    def hook(_m: nn.Module, _i: Any, out: torch.Tensor) -> torch.Tensor:
        m = mask.view(1, -1, *([1] * (out.dim() - 2)))
        return torch.where(m, fill.unsqueeze(0), out)

    with hooked(model, {layer: hook}):
        yield model


def _per_class_stats(n_classes: int):
    """Row statistics ``[rows, 2·K]``: correct and cross-entropy, each spread over true classes."""

    def stats(logits: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        both = row_stats_correct_ce(logits, y)  # [rows, 2]
        onehot = torch.nn.functional.one_hot(y, n_classes).to(torch.float64)  # [rows, K]
        return torch.cat([both[:, :1] * onehot, both[:, 1:] * onehot], dim=-1)

    return stats


@torch.no_grad()
def _sums(
    model: nn.Module,
    layer: str,
    x: torch.Tensor,
    y: torch.Tensor,
    masks: torch.Tensor,
    value: Literal["zero", "mean"],
    row_stats: RowStats,
    batch_size: int,
    max_rows: int,
    batched: bool,
    max_bytes: int,
    strategy: Strategy,
) -> tuple[torch.Tensor, torch.Tensor]:
    """``row_stats`` summed over ``x``: intact ``[S]`` and per ablation ``[groups, S]``.

    ``batched`` runs the engine; otherwise the plain reference loop (one hooked forward of the
    whole model per ablation).
    """
    model.eval()
    masks = masks.to(device=x.device, dtype=torch.bool)
    fill = fill_values(model, layer, x, value)
    if not batched:
        return _hook_loop(model, layer, x, y, masks, fill, batch_size, row_stats)
    res = ablation_sweep(
        model,
        layer,
        x,
        y,
        masks,
        fill,
        row_stats=row_stats,
        batch_size=batch_size,
        max_rows=max_rows,
        max_bytes=max_bytes,
        strategy=strategy,
    )
    return res.intact.cpu(), res.ablated.cpu()


@torch.no_grad()
def ablation_effects(
    model: nn.Module,
    layer: str,
    x: torch.Tensor,
    y: torch.Tensor,
    masks: torch.Tensor,
    *,
    value: Literal["zero", "mean"] = "zero",
    metric: Metric = "accuracy_drop",
    batch_size: int = 1024,
    max_rows: int = 1 << 16,
    batched: bool = True,
    max_bytes: int = DEFAULT_MAX_BYTES,
    strategy: Strategy = "auto",
) -> torch.Tensor:
    """Effect of each ablation in ``masks`` ``[groups, units]`` on ``metric``, ``[groups]``.

    ``accuracy_drop`` = accuracy(intact) − accuracy(ablated); ``loss_increase`` =
    mean cross-entropy(ablated) − mean cross-entropy(intact). The sweep runs in
    :func:`falsify.interventions.engine.ablation_sweep` (``strategy`` picks its path, ``auto`` the
    fastest exact one); ``max_rows`` and ``max_bytes`` bound one forward pass's expanded batch of
    (ablation, example) rows, and so the memory of the sweep. ``batched=False`` is the plain
    reference loop: one hooked forward of the whole model per ablation.
    """
    intact, ablated_sums = _sums(
        model,
        layer,
        x,
        y,
        masks,
        value,
        row_stats_correct_ce,
        batch_size,
        max_rows,
        batched,
        max_bytes,
        strategy,
    )
    column = 0 if metric == "accuracy_drop" else 1
    change = (ablated_sums[:, column] - intact[column]) / len(x)
    return (-change if metric == "accuracy_drop" else change).to(torch.float32)


@torch.no_grad()
def class_ablation_effects(
    model: nn.Module,
    layer: str,
    x: torch.Tensor,
    y: torch.Tensor,
    masks: torch.Tensor,
    n_classes: int,
    *,
    value: Literal["zero", "mean"] = "zero",
    metric: Metric = "accuracy_drop",
    batch_size: int = 1024,
    max_rows: int = 1 << 16,
    batched: bool = True,
    max_bytes: int = DEFAULT_MAX_BYTES,
    strategy: Strategy = "auto",
) -> torch.Tensor:
    """Per-class effect of each ablation in ``masks`` ``[groups, units]``: ``[groups, n_classes]``.

    Entry ``[g, c]`` is the effect of ablation ``g`` on the examples of class ``c`` alone:
    accuracy(intact, class c) − accuracy(ablated, class c), or the increase of the class's mean
    cross-entropy. A class with no example in ``y`` gets NaN. Weighting the row by the class
    frequencies gives back :func:`ablation_effects`.
    """
    intact, ablated_sums = _sums(
        model,
        layer,
        x,
        y,
        masks,
        value,
        _per_class_stats(n_classes),
        batch_size,
        max_rows,
        batched,
        max_bytes,
        strategy,
    )
    intact, ablated_sums = intact.view(2, n_classes), ablated_sums.view(-1, 2, n_classes)
    counts = torch.bincount(y.cpu(), minlength=n_classes).to(torch.float64)
    counts = torch.where(counts > 0, counts, torch.full_like(counts, float("nan")))
    column = 0 if metric == "accuracy_drop" else 1
    change = (ablated_sums[:, column] - intact[column]) / counts
    return (-change if metric == "accuracy_drop" else change).to(torch.float32)


def _hook_loop(
    model: nn.Module,
    layer: str,
    x: torch.Tensor,
    y: torch.Tensor,
    masks: torch.Tensor,
    fill: torch.Tensor,
    batch_size: int,
    row_stats: RowStats,
) -> tuple[torch.Tensor, torch.Tensor]:  # [S], [groups, S]: summed row statistics
    def sums() -> torch.Tensor:
        parts = [
            row_stats(model(x[i : i + batch_size]), y[i : i + batch_size]).sum(dim=0)
            for i in range(0, len(x), batch_size)
        ]
        return torch.stack(parts).sum(dim=0).cpu()

    intact = sums()
    out = []
    for mask in masks:
        with ablated(model, layer, mask, fill):
            out.append(sums())
    return intact, torch.stack(out) if out else torch.zeros(0, len(intact), dtype=torch.float64)


@register
class UnitAblationEffect(UnitEffectKind):
    """Damage done by ablating each unit on its own (Morcos et al. 2018)."""

    kind: Literal["unit_ablation"]
    value: Literal["zero", "mean"] = "zero"
    metric: Metric = "accuracy_drop"

    label: ClassVar[str] = "unit ablation"
    docs: ClassVar[str] = "docs/methods.md"

    def describe(self) -> str:
        return f"{self.metric.replace('_', ' ')} when ablated"

    def effects(
        self, model: nn.Module, layer: str, x: torch.Tensor, y: torch.Tensor
    ) -> torch.Tensor:
        masks = single_unit_masks(fill_values(model, layer, x, "zero").shape[0], device=x.device)
        return ablation_effects(model, layer, x, y, masks, value=self.value, metric=self.metric)
