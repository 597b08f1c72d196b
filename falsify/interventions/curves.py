"""Ablation curves (Morcos et al. 2018): accuracy as more and more units are ablated.

Units of a layer are ablated cumulatively in a random order: after step k the first k units of
the order are set to the fill (0, their mean, or resampled). Every step of every order is one ablation of the
batched engine in :mod:`falsify.interventions.ablation`, so a whole family of curves costs a
few forward passes. The area under the curve of accuracy relative to the intact model, over the
fraction of units ablated (trapezoid rule on [0, 1]), is 1 for a model whose output ignores the
layer and falls towards 0 for one that needs every unit; it is what Morcos et al. compare
between networks that generalize and networks that memorize. With the resample fill, one
draw of the sources serves every step of every order; its seed is drawn from the same
``generator``, after the orders.
"""

from __future__ import annotations

import numpy as np
import torch
from scipy.integrate import trapezoid
from torch import nn
from torch.utils.data import Dataset as TorchDataset

from falsify.data.stream import is_stream, model_batches
from falsify.hypothesis.units import Fill
from falsify.interventions.ablation import ablation_effects, n_units

__all__ = ["ablation_curves", "cumulative_masks", "curve_auc", "random_orders"]


def random_orders(n_units: int, orders: int, generator: torch.Generator) -> torch.Tensor:
    """``[orders, n_units]``: each row a random permutation of the units."""
    return torch.stack([torch.randperm(n_units, generator=generator) for _ in range(orders)])


def cumulative_masks(perms: torch.Tensor) -> torch.Tensor:
    """``[orders · (units + 1), units]``: for order o and step k (0…units), the first k units."""
    n_orders, n_units = perms.shape
    rank = torch.argsort(perms, dim=1)  # [orders, units]: position of each unit in its order
    steps = torch.arange(n_units + 1).view(1, -1, 1)  # [1, units + 1, 1]
    return (rank.unsqueeze(1) < steps).reshape(n_orders * (n_units + 1), n_units)


@torch.no_grad()
def ablation_curves(
    model: nn.Module,
    layer: str,
    x: torch.Tensor | TorchDataset,
    y: torch.Tensor,
    orders: int,
    generator: torch.Generator,
    value: Fill = "zero",
) -> tuple[torch.Tensor, float]:
    """Accuracy after each step of ``orders`` random cumulative ablations of ``layer``.

    Returns ``([orders, units + 1] accuracies, intact accuracy)``; column 0 is the intact model.
    ``x`` may be a streamed split whose items carry the labels ``y`` (:mod:`falsify.data.stream`).
    """
    model.eval()
    units = n_units(model, layer, x)
    perms = random_orders(units, orders, generator)
    masks = cumulative_masks(perms).to(next(model.parameters()).device)
    seed = int(torch.randint(2**31, (1,), generator=generator)) if value == "resample" else 0
    if is_stream(x):
        hits = torch.cat([model(xb).argmax(dim=1) == yb for xb, yb in model_batches(model, x, y)])
    else:
        hits = model(x).argmax(dim=1) == y
    base = hits.double().mean().item()
    drops = ablation_effects(
        model, layer, x, y, masks, value=value, seed=seed, metric="accuracy_drop"
    )
    acc = base - drops.double().view(orders, units + 1)
    return acc, base


def curve_auc(acc: torch.Tensor, base: float) -> float:
    """Mean over orders of the area under accuracy / ``base`` vs fraction of units ablated."""
    if base <= 0:
        return float("nan")
    rel = (acc / base).cpu().numpy()  # [orders, units + 1]
    frac = np.linspace(0.0, 1.0, rel.shape[1])
    return float(np.mean(trapezoid(rel, frac, axis=1)))
