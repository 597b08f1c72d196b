"""Unit groups to ablate together, as ``[groups, units]`` boolean masks for the ablation engine.

Three ways to choose a group of a layer's units:

- :func:`top_k_masks`: the ``k`` units ranked highest by a per-unit score (selectivity, an
  attribution, …) — the *targeted* group of the targeted-vs-control shape (PRODUCT.md §3);
- :func:`random_masks`: groups of ``k`` units drawn uniformly without replacement, many draws
  from an explicit ``torch.Generator`` — the *control* groups, matched on size;
- :func:`matched_random_masks`: control groups matched on size and on activation magnitude:
  the layer's units are cut into strata of similar mean activation (:func:`activation_strata`)
  and each draw takes, from every stratum, as many units as the targeted group has there;
- :func:`cluster_masks`: one group per cluster of a clustering of the layer's units (the
  cluster ablation of Golechha, Cope & Schoots 2024).

:func:`resolve_k` turns a ``k`` given as a count or as a fraction of the layer into a count.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch

__all__ = [
    "activation_strata",
    "cluster_masks",
    "matched_random_masks",
    "random_masks",
    "resolve_k",
    "top_k_masks",
]


def resolve_k(k: int | float, n_units: int) -> int:
    """A count of units from ``k``: an int is a count; a float in (0, 1) a fraction of the layer.

    A fraction is rounded to the nearest count, and is at least 1.
    """
    if isinstance(k, float):
        if not 0.0 < k < 1.0:
            raise ValueError(f"a fraction k must lie in (0, 1), got {k}")
        return max(1, round(k * n_units))
    if k < 1:
        raise ValueError(f"a count k must be at least 1, got {k}")
    return int(k)


def top_k_masks(scores: torch.Tensor, ks: Sequence[int]) -> torch.Tensor:
    """``[len(ks), units]``: row ``i`` marks the ``ks[i]`` units with the highest ``scores``.

    Ties are broken by unit index (the lower index ranks first), so the groups are nested
    and deterministic.
    """
    n_units = scores.shape[0]
    # A stable sort of the negated scores keeps tied units in index order.
    order = torch.sort(-scores.detach().to(torch.float64).cpu(), stable=True).indices
    masks = torch.zeros(len(ks), n_units, dtype=torch.bool)
    for i, k in enumerate(ks):
        if not 1 <= k <= n_units:
            raise ValueError(f"k = {k} units is not between 1 and the layer's {n_units} units")
        masks[i, order[:k]] = True
    return masks.to(scores.device)


def random_masks(n_units: int, k: int, n_draws: int, generator: torch.Generator) -> torch.Tensor:
    """``[n_draws, n_units]``: each row is ``k`` units drawn uniformly without replacement."""
    if not 1 <= k <= n_units:
        raise ValueError(f"k = {k} units is not between 1 and the layer's {n_units} units")
    keys = torch.rand(n_draws, n_units, generator=generator)
    chosen = keys.argsort(dim=1)[:, :k]  # a uniformly random k-subset per row
    masks = torch.zeros(n_draws, n_units, dtype=torch.bool)
    masks.scatter_(1, chosen, True)
    return masks


def activation_strata(activation: torch.Tensor, n_strata: int) -> torch.Tensor:
    """``[units]``: the stratum (``0..n_strata-1``, low to high) of each unit's ``activation``.

    Strata are equal-count bins of the units' rank by activation (sizes differ by at most one),
    ties ranked by unit index, so units of equal activation (e.g. silent ones) may fall in
    neighbouring strata. With ``n_strata`` at least the number of units every unit is its own
    stratum.
    """
    n_units = activation.shape[0]
    if n_strata < 1:
        raise ValueError(f"the number of strata must be at least 1, got {n_strata}")
    order = torch.sort(activation.detach().to(torch.float64).cpu(), stable=True).indices
    strata = torch.empty(n_units, dtype=torch.long)
    strata[order] = torch.arange(n_units) * min(n_strata, n_units) // n_units
    return strata


def matched_random_masks(
    strata: torch.Tensor, target: torch.Tensor, n_draws: int, generator: torch.Generator
) -> torch.Tensor:
    """``[n_draws, units]``: random groups with as many units in each stratum as ``target``.

    ``strata``: the stratum of each unit ``[units]`` (:func:`activation_strata`); ``target``: the
    group to match, a boolean mask ``[units]``. In every stratum, each row draws that many of the
    stratum's units uniformly without replacement (the targeted units among them), so a row has
    the target's size and its distribution over strata.
    """
    strata, target = strata.cpu(), target.cpu()
    n_units = strata.shape[0]
    if target.shape != (n_units,):
        raise ValueError(f"the target mask has shape {tuple(target.shape)}, not ({n_units},)")
    keys = torch.rand(n_draws, n_units, generator=generator)
    masks = torch.zeros(n_draws, n_units, dtype=torch.bool)
    for stratum in torch.unique(strata):
        members = torch.nonzero(strata == stratum).flatten()
        need = int(target[members].sum())
        if need:
            chosen = keys[:, members].argsort(dim=1)[:, :need]  # a random need-subset per row
            masks.scatter_(1, members[chosen], True)
    return masks


def cluster_masks(labels: np.ndarray | torch.Tensor, n_clusters: int) -> torch.Tensor:
    """``[n_clusters, units]`` from a cluster label per unit (labels in ``0..n_clusters-1``)."""
    lab = torch.as_tensor(np.asarray(labels), dtype=torch.long)
    if lab.numel() and (lab.min() < 0 or lab.max() >= n_clusters):
        raise ValueError(f"cluster labels must lie in 0..{n_clusters - 1}")
    return lab.unsqueeze(0) == torch.arange(n_clusters).unsqueeze(1)
