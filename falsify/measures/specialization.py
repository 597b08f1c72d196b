"""Cluster ablation and how specialized its damage is (Golechha, Cope & Schoots 2024;
modularity.md, "Cluster ablation and specialization").

Ablating one cluster (all its output units in the layer) gives a per-class accuracy drop; the
clusters × classes matrix of drops is the *damage matrix*. A cluster is specialized when its
damage falls unevenly on the classes. Two statistics of one row d of drops, both computed on
the damage d⁺ = max(d, 0) (a class that got better was not damaged):

- ``top_share``: the share of the total damage that falls on the ``m`` most damaged classes,
  Σ_{top m} d⁺ / Σ d⁺ — 1 when one class takes all the damage, m / n_classes when it is even;
- ``gini``: the Gini coefficient of d⁺, Σ_i Σ_j |d⁺_i − d⁺_j| / (2 n² mean(d⁺)) — 0 when
  even, (n − 1)/n when one class takes it all.

Both are undefined (NaN) for a group whose ablation damages no class. The control is the same
statistic for random groups of units of the same size as the cluster (:func:`specialization_vs_random`).
"""

from __future__ import annotations

from typing import Literal

import numpy as np
import pandas as pd
import torch
from torch import nn
from torch.utils.data import Dataset as TorchDataset

from falsify.hypothesis.units import Fill
from falsify.interventions.ablation import class_ablation_effects
from falsify.interventions.groups import cluster_masks, random_masks
from falsify.measures.clusterability import Coclusters

__all__ = ["SPECIALIZATION", "cluster_damage", "specialization", "specialization_vs_random"]

Statistic = Literal["top_share", "gini"]


def _top_share(d: np.ndarray, m: int) -> np.ndarray:
    total = d.sum(axis=1)
    top = -np.sort(-d, axis=1)[:, :m].sum(axis=1)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(total > 0, top / total, np.nan)


def _gini(d: np.ndarray, m: int) -> np.ndarray:
    n = d.shape[1]
    pair = np.abs(d[:, :, None] - d[:, None, :]).sum(axis=(1, 2))
    mean = d.mean(axis=1)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(mean > 0, pair / (2 * n * n * mean), np.nan)


SPECIALIZATION = {"top_share": _top_share, "gini": _gini}


def specialization(
    damage: np.ndarray, statistic: Statistic = "top_share", m: int = 1
) -> np.ndarray:
    """The specialization of each row of a ``[groups, classes]`` damage matrix: ``[groups]``."""
    d = np.clip(np.asarray(damage, dtype=np.float64), 0.0, None)
    return SPECIALIZATION[statistic](d, m)


def cluster_damage(
    model: nn.Module,
    layer: str,
    x: torch.Tensor | TorchDataset,
    y: torch.Tensor,
    clusters: Coclusters,
    n_classes: int,
    value: Fill = "zero",
) -> torch.Tensor:
    """The ``[clusters, classes]`` damage matrix: per-class accuracy drop from ablating each
    cluster's output units of ``layer`` (``clusters.rows`` labels the layer's units)."""
    masks = cluster_masks(clusters.rows, clusters.n_clusters).to(next(model.parameters()).device)
    return class_ablation_effects(model, layer, x, y, masks, n_classes, value=value)


def specialization_vs_random(
    model: nn.Module,
    layer: str,
    x: torch.Tensor | TorchDataset,
    y: torch.Tensor,
    clusters: Coclusters,
    n_classes: int,
    draws: int,
    generator: torch.Generator,
    statistic: Statistic = "top_share",
    m: int = 1,
    value: Fill = "zero",
) -> pd.DataFrame:
    """One row per cluster: its size, specialization, and that of ``draws`` random groups of
    the same size (mean over the draws whose ablation damages some class), and the difference.

    Columns: cluster, size, specialization, random_mean, random_defined (draws with a defined
    statistic), difference = specialization − random_mean.
    """
    n_units = len(clusters.rows)
    damage = cluster_damage(model, layer, x, y, clusters, n_classes, value).cpu().numpy()
    spec = specialization(damage, statistic, m)
    rows = []
    for c in range(clusters.n_clusters):
        size = int((clusters.rows == c).sum())
        if size == 0:
            continue
        masks = random_masks(n_units, size, draws, generator).to(next(model.parameters()).device)
        rand_damage = class_ablation_effects(model, layer, x, y, masks, n_classes, value=value)
        rand = specialization(rand_damage.cpu().numpy(), statistic, m)
        defined = rand[~np.isnan(rand)]
        random_mean = float(defined.mean()) if len(defined) else float("nan")
        rows.append(
            {
                "cluster": c,
                "size": size,
                "specialization": float(spec[c]),
                "random_mean": random_mean,
                "random_defined": len(defined),
                "difference": float(spec[c]) - random_mean,
            }
        )
    return pd.DataFrame(rows)
