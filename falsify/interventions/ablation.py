"""Unit and group ablation (Morcos et al. 2018), evaluated many ablations per forward pass.

An ablation sets some units of a layer to a fill value (0, or each unit's mean activation) for
every input. The engine puts the ablations on a leading dimension: the network runs up to the
layer once per batch of inputs, a forward hook expands the layer's output ``[batch, units, …]``
into ``[groups × batch, units, …]`` with each group's units replaced, and the rest of the
network runs on the expanded batch. This is exact whenever the layers after the hook treat
examples independently (true of MLPs, CNNs and any model in eval mode without connections that
skip over the hooked layer). :func:`ablation_effects` checks for the rare model where it is
not (a shape error) and falls back to one forward per ablation.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any, Literal

import torch
from torch import nn

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


def _expand_hook(masks: torch.Tensor, fill: torch.Tensor):
    """Forward hook: output ``[B, U, …]`` → ``[G·B, U, …]`` with group g's units set to fill."""

    def hook(_m: nn.Module, _i: Any, out: torch.Tensor) -> torch.Tensor:
        g = masks.shape[0]
        shape = (1, *masks.shape[1:]) + (1,) * (out.dim() - 2)
        m = masks.view(g, *shape)  # [G, 1, U, 1…]
        expanded = torch.where(m, fill.unsqueeze(0).unsqueeze(0), out.unsqueeze(0))
        return expanded.reshape(g * out.shape[0], *out.shape[1:])

    return hook


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


def _scores(
    logits: torch.Tensor, y: torch.Tensor, onehot: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """Correct count and summed cross-entropy per class: logits ``[…, B, C]`` → ``[…, K]``.

    ``onehot`` ``[B, K]`` (float64) assigns each example to its true class.
    """
    correct = (logits.argmax(dim=-1) == y).to(torch.float64)  # [..., B]
    target = y.expand(logits.shape[:-1]).unsqueeze(-1)
    ce = -logits.log_softmax(dim=-1).gather(-1, target).squeeze(-1).to(torch.float64)
    return correct @ onehot, ce @ onehot


@torch.no_grad()
def _sweep(
    model: nn.Module,
    layer: str,
    x: torch.Tensor,
    y: torch.Tensor,
    masks: torch.Tensor,
    value: Literal["zero", "mean"],
    n_classes: int,
    batch_size: int,
    max_rows: int,
    batched: bool,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """Per-class sums over ``x``: intact correct and CE ``[K]``, ablated correct and CE ``[G, K]``."""
    model.eval()
    masks = masks.to(torch.bool)
    fill = fill_values(model, layer, x, value)
    n_groups = masks.shape[0]
    base_correct = torch.zeros(n_classes, dtype=torch.float64)
    base_ce = torch.zeros(n_classes, dtype=torch.float64)
    correct = torch.zeros(n_groups, n_classes, dtype=torch.float64)
    ce = torch.zeros(n_groups, n_classes, dtype=torch.float64)
    for start in range(0, len(x), batch_size):
        xb, yb = x[start : start + batch_size], y[start : start + batch_size]
        onehot = torch.nn.functional.one_hot(yb, n_classes).to(torch.float64)
        c0, l0 = _scores(model(xb), yb, onehot)
        base_correct += c0.cpu()
        base_ce += l0.cpu()
        chunk = max(1, max_rows // len(xb))
        for g0 in range(0, n_groups, chunk):
            block = masks[g0 : g0 + chunk]
            c, loss = _run_block(model, layer, xb, yb, onehot, block, fill, batched)
            correct[g0 : g0 + len(block)] += c.cpu()
            ce[g0 : g0 + len(block)] += loss.cpu()
    return base_correct, base_ce, correct, ce


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
) -> torch.Tensor:
    """Effect of each ablation in ``masks`` ``[groups, units]`` on ``metric``, ``[groups]``.

    ``accuracy_drop`` = accuracy(intact) − accuracy(ablated); ``loss_increase`` =
    mean cross-entropy(ablated) − mean cross-entropy(intact). ``max_rows`` bounds the expanded
    batch (groups × examples) of one forward pass, and so the memory of the sweep.
    """
    n_classes = int(y.max().item()) + 1 if len(y) else 1
    base_correct, base_ce, correct, ce = _sweep(
        model, layer, x, y, masks, value, n_classes, batch_size, max_rows, batched
    )
    n = len(x)
    if metric == "accuracy_drop":
        return ((base_correct.sum() - correct.sum(dim=1)) / n).to(torch.float32)
    return ((ce.sum(dim=1) - base_ce.sum()) / n).to(torch.float32)


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
) -> torch.Tensor:
    """Per-class effect of each ablation in ``masks`` ``[groups, units]``: ``[groups, n_classes]``.

    Entry ``[g, c]`` is the effect of ablation ``g`` on the examples of class ``c`` alone:
    accuracy(intact, class c) − accuracy(ablated, class c), or the increase of the class's mean
    cross-entropy. A class with no example in ``y`` gets NaN. Weighting the row by the class
    frequencies gives back :func:`ablation_effects`.
    """
    base_correct, base_ce, correct, ce = _sweep(
        model, layer, x, y, masks, value, n_classes, batch_size, max_rows, batched
    )
    counts = torch.bincount(y.cpu(), minlength=n_classes).to(torch.float64)
    counts = torch.where(counts > 0, counts, torch.full_like(counts, float("nan")))
    if metric == "accuracy_drop":
        return ((base_correct - correct) / counts).to(torch.float32)
    return ((ce - base_ce) / counts).to(torch.float32)


def _run_block(
    model: nn.Module,
    layer: str,
    xb: torch.Tensor,
    yb: torch.Tensor,
    onehot: torch.Tensor,
    block: torch.Tensor,
    fill: torch.Tensor,
    batched: bool,
) -> tuple[torch.Tensor, torch.Tensor]:
    if batched:
        try:
            with hooked(model, {layer: _expand_hook(block, fill)}):
                logits = model(xb)
            return _scores(logits.view(len(block), len(xb), -1), yb, onehot)
        except RuntimeError:
            # A connection that skips over the hooked layer meets the expanded batch with the
            # original one; fall back to one forward per ablation below.
            pass
    out_c, out_l = [], []
    for mask in block:
        with ablated(model, layer, mask, fill):
            c, loss = _scores(model(xb), yb, onehot)
        out_c.append(c)
        out_l.append(loss)
    return torch.stack(out_c), torch.stack(out_l)
