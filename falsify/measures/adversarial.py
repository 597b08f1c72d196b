"""Adversarial accuracy under L∞ attacks: FGSM and PGD.

- FGSM (Goodfellow, Shlens & Szegedy 2015): x' = x + ε · sign(∇ₓ CE(f(x), y)).
- PGD (Madry et al. 2018): from a uniform random start in the ε-ball, ``steps`` steps of
  x ← Π_{ε-ball ∩ bounds}(x + step_size · sign(∇ₓ CE)).

Both clip to the data's ``bounds`` (digits lie in [0, 1]) when given. The model is in eval mode
and only the input's gradient is computed; the weights are never touched.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

__all__ = ["adversarial_accuracy", "fgsm", "pgd"]

Bounds = tuple[float, float] | None


def _clip(x: torch.Tensor, bounds: Bounds) -> torch.Tensor:
    return x if bounds is None else x.clamp(bounds[0], bounds[1])


def _input_grad(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    x = x.detach().requires_grad_(True)
    loss = F.cross_entropy(model(x), y, reduction="sum")
    (grad,) = torch.autograd.grad(loss, x)
    return grad


def fgsm(
    model: nn.Module, x: torch.Tensor, y: torch.Tensor, epsilon: float, bounds: Bounds = (0.0, 1.0)
) -> torch.Tensor:
    """The FGSM adversarial examples of ``(x, y)`` at L∞ radius ``epsilon``."""
    model.eval()
    return _clip(x + epsilon * _input_grad(model, x, y).sign(), bounds).detach()


def pgd(
    model: nn.Module,
    x: torch.Tensor,
    y: torch.Tensor,
    epsilon: float,
    steps: int,
    step_size: float,
    generator: torch.Generator,
    bounds: Bounds = (0.0, 1.0),
) -> torch.Tensor:
    """PGD adversarial examples with a random start, projected onto the ε-ball and bounds."""
    model.eval()
    start = (torch.rand(x.shape, generator=generator).to(x) * 2 - 1) * epsilon
    adv = _clip(x + start, bounds)
    for _ in range(steps):
        adv = adv + step_size * _input_grad(model, adv, y).sign()
        adv = _clip(torch.min(torch.max(adv, x - epsilon), x + epsilon), bounds).detach()
    return adv


def adversarial_accuracy(
    model: nn.Module,
    x: torch.Tensor,
    y: torch.Tensor,
    attack: str,
    epsilon: float,
    steps: int,
    step_size: float,
    generator: torch.Generator,
    bounds: Bounds = (0.0, 1.0),
    batch_size: int = 512,
) -> float:
    """Accuracy on adversarial examples made for each input from its own true label."""
    correct = 0
    for start in range(0, len(x), batch_size):
        xb, yb = x[start : start + batch_size], y[start : start + batch_size]
        if attack == "fgsm":
            adv = fgsm(model, xb, yb, epsilon, bounds)
        else:
            adv = pgd(model, xb, yb, epsilon, steps, step_size, generator, bounds)
        with torch.no_grad():
            correct += int((model(adv).argmax(dim=1) == yb).sum())
    return correct / len(x)
