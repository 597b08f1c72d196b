"""Class selectivity index (Morcos et al. 2018; Leavitt & Morcos 2021), PRODUCT.md §6.

SI = (μ_max − μ_−max) / (μ_max + μ_−max + ε), where μ_max is a unit's largest class-conditional
mean activation and μ_−max the mean of its other class-conditional means. Computed on
post-ReLU activations (so SI ∈ [0, 1]); units are read through the layer's unit view
(:mod:`falsify.units`: a conv channel averaged over space, a token layer's channel averaged over
positions or read at one). A unit silent for every class gets SI = 0.

Shared by the measure (:mod:`falsify.measures.selectivity`) and training
(:mod:`falsify.models.regularizers`, :mod:`falsify.models.training`), below both.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence

import torch
from torch import nn

from falsify.hooks import capture
from falsify.units import unit_view

__all__ = ["class_conditional_means", "mean_selectivity", "selectivity_index"]


@torch.no_grad()
def class_conditional_means(
    model: nn.Module,
    layer: str,
    x: torch.Tensor | Iterable[tuple[torch.Tensor, torch.Tensor]],
    y: torch.Tensor | None,
    n_classes: int,
    batch_size: int = 1024,
) -> torch.Tensor:
    """Mean activation of each unit of ``layer`` per class, ``[n_classes, units]``.

    Streams over ``x`` in batches, keeping only running per-class sums and counts, so memory
    does not grow with the dataset. ``x`` may instead be an iterable of ``(x, y)`` batches
    (``y`` then ``None``), as :func:`falsify.data.stream.batches` yields from a torch Dataset.
    """
    model.eval()
    view = unit_view(model, layer)
    if isinstance(x, torch.Tensor):
        if y is None:
            raise ValueError("a tensor of inputs needs its labels y")
        inputs, labels = x, y
        parts: Iterable[tuple[torch.Tensor, torch.Tensor]] = (
            (inputs[i : i + batch_size], labels[i : i + batch_size])
            for i in range(0, len(inputs), batch_size)
        )
    else:
        parts = x
    sums: torch.Tensor | None = None
    counts: torch.Tensor | None = None
    for xb, yb in parts:
        with capture(model, layer) as outs:
            model(xb)
        act = view.read(outs[0]).to(torch.float64)  # [batch, units]
        if sums is None or counts is None:
            sums = torch.zeros(n_classes, act.shape[1], dtype=torch.float64, device=xb.device)
            counts = torch.zeros(n_classes, dtype=torch.float64, device=xb.device)
        sums.index_add_(0, yb, act)
        counts += torch.bincount(yb, minlength=n_classes).to(counts)
    if sums is None or counts is None:
        raise ValueError("no examples to measure selectivity on")
    if (counts == 0).any():
        missing = torch.nonzero(counts == 0).flatten().tolist()
        raise ValueError(f"classes {missing} have no examples; selectivity needs every class")
    return (sums / counts[:, None]).to(torch.float32)


def selectivity_index(means: torch.Tensor, epsilon: float = 1e-7) -> torch.Tensor:
    """SI of each unit from class-conditional means ``[n_classes, units]`` → ``[units]``.

    Differentiable in ``means``, so the same function serves the training-time regularizer.
    """
    n_classes = means.shape[0]
    mu_max = means.max(dim=0).values
    mu_rest = (means.sum(dim=0) - mu_max) / (n_classes - 1)
    return (mu_max - mu_rest) / (mu_max + mu_rest + epsilon)


def mean_selectivity(
    model: nn.Module,
    layers: Sequence[str],
    x: torch.Tensor | Callable[[], Iterable[tuple[torch.Tensor, torch.Tensor]]],
    y: torch.Tensor | None,
    n_classes: int,
    epsilon: float = 1e-7,
) -> float:
    """Mean over ``layers`` of the mean SI over each layer's units: the quantity the
    selectivity regularizer moves (Leavitt & Morcos 2021), measured on the whole of ``x``; or,
    with ``y`` None, on the ``(x, y)`` batches a fresh call of ``x()`` yields, one per layer
    (streamed data, :func:`falsify.data.stream.model_batches`)."""
    per_layer = [
        selectivity_index(
            class_conditional_means(model, layer, x() if callable(x) else x, y, n_classes),
            epsilon,
        ).mean()
        for layer in layers
    ]
    return float(torch.stack(per_layer).mean())
