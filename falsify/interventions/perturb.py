"""Perturbing a whole layer (Morcos et al. 2018): Gaussian noise and random-direction ablation.

- Noise: every unit gets zero-mean Gaussian noise with standard deviation ``scale`` times that
  unit's own standard deviation over the inputs, so that one scale means the same for quiet and
  loud units.
- Random directions: the layer's activation vector ``h`` (per position, for conv channels) loses
  its component along k random orthonormal directions, ``h ← h − V_k V_kᵀ h``. With k = number
  of units every direction is gone and the layer outputs 0, the same end point as ablating every
  unit; in between, the ablated directions are not aligned with any unit, which is what lets
  Morcos et al. compare reliance on single *directions* with reliance on single *units*.

Both read and change the units through the layer's unit view (:mod:`falsify.units`): the
spread and the directions are over its units, at every position of a mean view or at the
position of a position view only. Both run inside scoped hooks
(:func:`falsify.hooks.hooked`).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from torch import nn

from falsify.hooks import capture, hooked
from falsify.units import unit_view

__all__ = ["direction_ablation_curves", "noise_curve", "random_directions", "unit_spread"]


@torch.no_grad()
def unit_spread(model: nn.Module, layer: str, x: torch.Tensor) -> torch.Tensor:
    """Each unit's standard deviation over ``x`` (and the averaged axes), ``[units]``."""
    model.eval()
    view = unit_view(model, layer)
    with capture(model, layer) as outs:
        model(x)
    return view.spread(outs[0])


def _accuracy(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> float:
    return (model(x).argmax(dim=1) == y).double().mean().item()


@torch.no_grad()
def noise_curve(
    model: nn.Module,
    layer: str,
    x: torch.Tensor,
    y: torch.Tensor,
    scales: Sequence[float],
    draws: int,
    generator: torch.Generator,
) -> torch.Tensor:
    """Accuracy with noise of each relative ``scale`` on ``layer``, mean over ``draws``: ``[scales]``."""
    model.eval()
    view = unit_view(model, layer)
    sd = unit_spread(model, layer, x)
    out: list[float] = []
    for scale in scales:
        accs = []
        for _ in range(draws if scale > 0 else 1):

            def hook(_m: nn.Module, _i: Any, o: torch.Tensor, scale: float = scale) -> torch.Tensor:
                noise = torch.randn(o.shape, generator=generator).to(o)
                scope = view.scope(o)
                if scope is not None:
                    noise = torch.where(scope, noise, 0.0)
                return o + scale * view.per_unit(o, sd) * noise

            with hooked(model, {layer: hook}):
                accs.append(_accuracy(model, x, y))
        out.append(sum(accs) / len(accs))
    return torch.tensor(out, dtype=torch.float64)


def random_directions(n_units: int, generator: torch.Generator) -> torch.Tensor:
    """``[n_units, n_units]`` random orthonormal basis (columns), Haar-distributed."""
    a = torch.randn(n_units, n_units, generator=generator, dtype=torch.float64)
    q, r = torch.linalg.qr(a)
    return q * torch.sign(torch.diagonal(r)).unsqueeze(0)


@torch.no_grad()
def direction_ablation_curves(
    model: nn.Module,
    layer: str,
    x: torch.Tensor,
    y: torch.Tensor,
    orders: int,
    generator: torch.Generator,
) -> tuple[torch.Tensor, float]:
    """Accuracy after removing 0…units random directions, for ``orders`` random bases.

    Returns ``([orders, units + 1] accuracies, intact accuracy)``, like
    :func:`falsify.interventions.curves.ablation_curves`.
    """
    model.eval()
    view = unit_view(model, layer)
    with capture(model, layer) as outs:
        model(x[:1])
    n_units = view.n_units(outs[0])
    base = _accuracy(model, x, y)
    acc = torch.empty(orders, n_units + 1, dtype=torch.float64)
    for o in range(orders):
        basis = random_directions(n_units, generator).to(x.device, outs[0].dtype)
        for k in range(n_units + 1):
            v = basis[:, :k]  # [units, k]

            def hook(
                _m: nn.Module, _i: Any, out: torch.Tensor, v: torch.Tensor = v
            ) -> torch.Tensor:
                # h: [batch, *other axes, units]
                return view.map_units(out, lambda h, v=v: h - (h @ v) @ v.T)

            with hooked(model, {layer: hook}):
                acc[o, k] = _accuracy(model, x, y)
    return acc, base
