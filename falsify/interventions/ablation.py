"""Unit and group ablation (Morcos et al. 2018): the effect on accuracy or loss of clamping units.

An ablation sets some units of a layer to a fill (``Fill``: 0, each unit's mean activation, or
``resample``: its activation on another input of the same split, see :func:`resample_sources`
and docs/methods.md, "Ablation fills") for every input. Units are read and set through the
layer's unit view (:mod:`falsify.units`). :func:`ablation_effects` turns the summed per-example statistics that the sweep
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
from torch.utils.data import Dataset as TorchDataset

from falsify.data.base import answer_labels
from falsify.data.stream import (
    Source,
    batches,
    first_inputs,
    gather,
    is_stream,
    labels_of,
    n_examples,
)
from falsify.hooks import capture, hooked
from falsify.hypothesis.kinds import UnitEffectKind, register
from falsify.hypothesis.units import Fill
from falsify.interventions.engine import (
    DEFAULT_MAX_BYTES,
    RowStats,
    Strategy,
    ablation_sweep,
    row_stats_correct_ce,
)
from falsify.units import unit_view

__all__ = [
    "ablated",
    "ablation_effects",
    "class_ablation_effects",
    "fill_values",
    "n_units",
    "resample_sources",
    "single_unit_masks",
]

Metric = Literal["accuracy_drop", "loss_increase"]


def single_unit_masks(n_units: int, device: torch.device | None = None) -> torch.Tensor:
    """``[n_units, n_units]`` boolean masks, row ``u`` ablating unit ``u`` alone."""
    return torch.eye(n_units, dtype=torch.bool, device=device)


@torch.no_grad()
def n_units(model: nn.Module, layer: str, x: torch.Tensor) -> int:
    """The number of units of ``layer``, as its unit view reads them (one forward of ``x[:1]``;
    ``x`` a tensor or a streamed split)."""
    model.eval()
    view = unit_view(model, layer)
    with capture(model, layer) as outs:
        model(first_inputs(x, 1).to(next(model.parameters()).device))
    return view.n_units(outs[0])


def resample_sources(n: int, seed: int) -> torch.Tensor:
    """``[n]``: the example whose activations example ``i`` gets under the resample fill.

    σ = ``torch.randperm(n)`` drawn from ``torch.Generator().manual_seed(seed)``, and example
    σ_i takes its activations from σ_{i+1 mod n}: a random cycle through the split, so every
    example gets another example's values (Chan et al. 2022, resample ablation) and every
    example is drawn once. ``n = 1`` leaves the one example its own source.
    """
    sigma = torch.randperm(n, generator=torch.Generator().manual_seed(seed))
    source = torch.empty(n, dtype=torch.long)
    source[sigma] = sigma.roll(-1)
    return source


@torch.no_grad()
def fill_values(
    model: nn.Module,
    layer: str,
    x: torch.Tensor | TorchDataset,
    value: Fill,
    seed: int = 0,
    *,
    batch_size: int = 1024,
    device: torch.device | None = None,
) -> torch.Tensor:
    """What the units are set to: zeros or the mean over ``x``, ``[…]`` (the layer's output
    shape without the batch), or for ``resample`` one row per example of ``x``, ``[len(x), …]``:
    the layer's output on the example :func:`resample_sources` (``seed``) assigns it.

    ``x`` may be a map-style torch Dataset of ``(x, y)`` items, streamed in batches onto
    ``device`` (:mod:`falsify.data.stream`): the mean is then summed in float64 over the
    batches (equal to the in-memory float32 mean to float rounding, ≈1e-7 relative), and the
    resample fill holds the layer's output for every example, ``[len(x), …]``, as in memory.
    """
    model.eval()
    unit_view(model, layer)  # refuses a layer that holds no units
    if is_stream(x):
        device = device or torch.device("cpu")
        if value == "zero":
            return torch.zeros_like(_layer_output(model, layer, gather(x, [0])[0].to(device))[0])
        parts = (_layer_output(model, layer, xb) for xb, _ in batches(x, batch_size, device=device))
        if value == "resample":
            return torch.cat(list(parts))[resample_sources(len(x), seed).to(device)]
        total: torch.Tensor | None = None
        for h in parts:
            s = h.to(torch.float64).sum(dim=0)
            total = s if total is None else total + s
        if total is None:
            raise ValueError("a mean fill needs at least one example")
        return (total / len(x)).to(h.dtype)
    out = _layer_output(model, layer, x[:1] if value == "zero" else x)
    if value == "zero":
        return torch.zeros_like(out[0])
    if value == "resample":
        return out[resample_sources(len(x), seed).to(x.device)]
    return out.mean(dim=0)


def _layer_output(model: nn.Module, layer: str, x: torch.Tensor) -> torch.Tensor:
    with capture(model, layer) as outs:
        model(x)
    return outs[0]


@contextmanager
def ablated(
    model: nn.Module, layer: str, mask: torch.Tensor, fill: torch.Tensor
) -> Iterator[nn.Module]:
    """Within the block, ``model`` runs with the units in ``mask`` ``[units]`` set to ``fill``.

    ``fill`` is what :func:`fill_values` gives: ``[…]`` for every input, or ``[batch, …]`` one
    row per input of the forward passes in the block (resample), which must then be exactly
    those inputs, in order. The units are set through the layer's unit view.
    """
    view = unit_view(model, layer)

    def hook(_m: nn.Module, _i: Any, out: torch.Tensor) -> torch.Tensor:
        return view.apply(out, mask, fill)

    with hooked(model, {layer: hook}):
        yield model


def _per_class_stats(n_classes: int):
    """Row statistics ``[rows, 2·K]``: correct and cross-entropy, each spread over true classes."""

    def stats(logits: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        both = row_stats_correct_ce(logits, y)  # [rows, 2]
        onehot = torch.nn.functional.one_hot(answer_labels(y), n_classes)  # [rows, K]
        onehot = onehot.to(torch.float64)
        return torch.cat([both[:, :1] * onehot, both[:, 1:] * onehot], dim=-1)

    return stats


@torch.no_grad()
def _sums(
    model: nn.Module,
    layer: str,
    x: torch.Tensor | TorchDataset,
    y: torch.Tensor | None,
    masks: torch.Tensor,
    value: Fill,
    seed: int,
    row_stats: RowStats,
    batch_size: int,
    max_rows: int,
    batched: bool,
    max_bytes: int,
    strategy: Strategy,
    device: torch.device | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """``row_stats`` summed over ``x``: intact ``[S]`` and per ablation ``[groups, S]``.

    ``batched`` runs the engine; otherwise the plain reference loop (one hooked forward of the
    whole model per ablation). ``x`` may be a torch Dataset streamed onto ``device`` (``y``
    then ``None``).
    """
    model.eval()
    stream = is_stream(x)
    device = (device or torch.device("cpu")) if stream else x.device  # type: ignore[union-attr]
    masks = masks.to(device=device, dtype=torch.bool)
    fill = fill_values(model, layer, x, value, seed, batch_size=batch_size, device=device)
    if not batched:
        per_example = value == "resample"  # fill [N, …]: one row per example
        source = x if stream else (x, y)
        return _hook_loop(
            model, layer, source, device, masks, fill, per_example, batch_size, row_stats
        )
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
        device=device,
    )
    return res.intact.cpu(), res.ablated.cpu()


@torch.no_grad()
def ablation_effects(
    model: nn.Module,
    layer: str,
    x: torch.Tensor | TorchDataset,
    y: torch.Tensor | None,
    masks: torch.Tensor,
    *,
    value: Fill = "zero",
    seed: int = 0,
    metric: Metric = "accuracy_drop",
    batch_size: int = 1024,
    max_rows: int = 1 << 16,
    batched: bool = True,
    max_bytes: int = DEFAULT_MAX_BYTES,
    strategy: Strategy = "auto",
    device: torch.device | None = None,
) -> torch.Tensor:
    """Effect of each ablation in ``masks`` ``[groups, units]`` on ``metric``, ``[groups]``.

    ``accuracy_drop`` = accuracy(intact) − accuracy(ablated); ``loss_increase`` =
    mean cross-entropy(ablated) − mean cross-entropy(intact). ``seed`` fixes the resample fill's
    draw (:func:`resample_sources`; unused by the other fills). The sweep runs in
    :func:`falsify.interventions.engine.ablation_sweep` (``strategy`` picks its path, ``auto`` the
    fastest exact one); ``max_rows`` and ``max_bytes`` bound one forward pass's expanded batch of
    (ablation, example) rows, and so the memory of the sweep. ``batched=False`` is the plain
    reference loop: one hooked forward of the whole model per ablation. ``x`` may be a map-style
    torch Dataset of ``(x, y)`` items with ``y=None``, streamed onto ``device`` (default the
    CPU) with every tensor the sweep holds sized to ``max_bytes`` (docs/performance.md, "Data
    that does not fit in memory"); a streamed split's items carry its labels, so ``y`` is
    then ignored.
    """
    if is_stream(x):
        y = None
        device = device or next(model.parameters()).device
    intact, ablated_sums = _sums(
        model,
        layer,
        x,
        y,
        masks,
        value,
        seed,
        row_stats_correct_ce,
        batch_size,
        max_rows,
        batched,
        max_bytes,
        strategy,
        device,
    )
    column = 0 if metric == "accuracy_drop" else 1
    change = (ablated_sums[:, column] - intact[column]) / n_examples(x if is_stream(x) else (x, y))
    return (-change if metric == "accuracy_drop" else change).to(torch.float32)


@torch.no_grad()
def class_ablation_effects(
    model: nn.Module,
    layer: str,
    x: torch.Tensor | TorchDataset,
    y: torch.Tensor | None,
    masks: torch.Tensor,
    n_classes: int,
    *,
    value: Fill = "zero",
    seed: int = 0,
    metric: Metric = "accuracy_drop",
    batch_size: int = 1024,
    max_rows: int = 1 << 16,
    batched: bool = True,
    max_bytes: int = DEFAULT_MAX_BYTES,
    strategy: Strategy = "auto",
    device: torch.device | None = None,
) -> torch.Tensor:
    """Per-class effect of each ablation in ``masks`` ``[groups, units]``: ``[groups, n_classes]``.

    Entry ``[g, c]`` is the effect of ablation ``g`` on the examples of class ``c`` alone:
    accuracy(intact, class c) − accuracy(ablated, class c), or the increase of the class's mean
    cross-entropy. A class with no example in ``y`` gets NaN. Weighting the row by the class
    frequencies gives back :func:`ablation_effects`. ``x`` may be a streamed split, as for
    :func:`ablation_effects` (``y`` is then ignored: its items carry the labels).
    """
    if is_stream(x):
        y = None
        device = device or next(model.parameters()).device
    intact, ablated_sums = _sums(
        model,
        layer,
        x,
        y,
        masks,
        value,
        seed,
        _per_class_stats(n_classes),
        batch_size,
        max_rows,
        batched,
        max_bytes,
        strategy,
        device,
    )
    intact, ablated_sums = intact.view(2, n_classes), ablated_sums.view(-1, 2, n_classes)
    labels = labels_of(x) if is_stream(x) else y
    counts = torch.bincount(answer_labels(labels).cpu(), minlength=n_classes).to(torch.float64)
    counts = torch.where(counts > 0, counts, torch.full_like(counts, float("nan")))
    column = 0 if metric == "accuracy_drop" else 1
    change = (ablated_sums[:, column] - intact[column]) / counts
    return (-change if metric == "accuracy_drop" else change).to(torch.float32)


def _hook_loop(
    model: nn.Module,
    layer: str,
    source: Source,
    device: torch.device,
    masks: torch.Tensor,
    fill: torch.Tensor,
    per_example: bool,
    batch_size: int,
    row_stats: RowStats,
) -> tuple[torch.Tensor, torch.Tensor]:  # [S], [groups, S]: summed row statistics
    def sums() -> torch.Tensor:
        parts = [
            row_stats(model(xb), yb).sum(dim=0)
            for xb, yb in batches(source, batch_size, device=device)
        ]
        return torch.stack(parts).sum(dim=0).cpu()

    def ablated_sums(mask: torch.Tensor) -> torch.Tensor:
        parts = []
        for i, (xb, yb) in enumerate(batches(source, batch_size, device=device)):
            rows = fill[i * batch_size : (i + 1) * batch_size] if per_example else fill
            with ablated(model, layer, mask, rows):
                stats = row_stats(model(xb), yb)
            parts.append(stats.sum(dim=0))
        return torch.stack(parts).sum(dim=0).cpu()

    intact = sums()
    out = [ablated_sums(mask) for mask in masks]
    return intact, torch.stack(out) if out else torch.zeros(0, len(intact), dtype=torch.float64)


@register
class UnitAblationEffect(UnitEffectKind):
    """Damage done by ablating each unit on its own (Morcos et al. 2018)."""

    kind: Literal["unit_ablation"]
    value: Fill = "zero"
    metric: Metric = "accuracy_drop"

    label: ClassVar[str] = "unit ablation"
    streams: ClassVar[bool] = True
    docs: ClassVar[str] = "docs/methods.md"

    def describe(self) -> str:
        return f"{self.metric.replace('_', ' ')} when ablated"

    def effects(
        self, model: nn.Module, layer: str, x: torch.Tensor, y: torch.Tensor
    ) -> torch.Tensor:
        device = next(model.parameters()).device
        masks = single_unit_masks(n_units(model, layer, x), device=device)
        return ablation_effects(model, layer, x, y, masks, value=self.value, metric=self.metric)
