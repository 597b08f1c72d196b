"""Bipartite co-clustering of a layer's weights and the share of weight inside clusters
(Golechha, Cope & Schoots 2024; spec: modularity.md), shared by the clusterability measure
(:mod:`falsify.measures.clusterability`, which documents the method) and the training-time
enmeshment term (:mod:`falsify.models.enmeshment`).

A unit layer's weight module is found through its unit view (:func:`falsify.units.weight_module`).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from sklearn.cluster import SpectralCoclustering
from torch import nn

from falsify.units import weight_module

__all__ = [
    "Coclusters",
    "cluster_layer",
    "clusterability",
    "cocluster",
    "edge_weights",
    "enmeshment",
]


@dataclass(frozen=True)
class Coclusters:
    """A bipartite clustering of a layer: a cluster label per output and per input unit."""

    rows: np.ndarray  # [out] labels in 0..k-1
    cols: np.ndarray  # [in] labels in 0..k-1
    n_clusters: int

    def same_cluster(self, device: torch.device | None = None) -> torch.Tensor:
        """``[out, in]`` boolean: output unit o and input unit i are in the same cluster."""
        r = torch.as_tensor(self.rows, device=device)
        c = torch.as_tensor(self.cols, device=device)
        return r[:, None] == c[None, :]


def edge_weights(weight: torch.Tensor) -> torch.Tensor:
    """Squared edge weights ``[out, in]``: W² for a linear layer, squared kernel norms for a conv.

    Differentiable in ``weight``.
    """
    sq = weight**2
    return sq.flatten(2).sum(dim=2) if sq.dim() > 2 else sq


def cocluster(matrix: np.ndarray | torch.Tensor, n_clusters: int, seed: int = 0) -> Coclusters:
    """Spectral co-clustering of a non-negative ``[out, in]`` matrix (|W| or kernel norms).

    scikit-learn's ``SpectralCoclustering`` (Dhillon 2001): normalize
    Ã = D_r^{-1/2} A D_c^{-1/2}, take the singular vectors 2..1+⌈log2 k⌉, k-means on the stacked
    row and column embeddings. ``seed`` fixes the randomized SVD and k-means.
    """
    a = np.abs(np.asarray(torch.as_tensor(matrix).detach().cpu(), dtype=np.float64))
    if n_clusters < 2 or n_clusters > min(a.shape):
        raise ValueError(
            f"n_clusters must lie in 2..{min(a.shape)} for a {a.shape[0]}×{a.shape[1]} layer"
        )
    if (a.sum(axis=0) == 0).any() or (a.sum(axis=1) == 0).any():
        # A unit with no edge at all has an undefined degree normalization; a uniform floor far
        # below every real weight defines it without moving the others.
        a = a + 1e-12 * max(a.max(), 1.0)
    model = SpectralCoclustering(n_clusters=n_clusters, random_state=seed).fit(a)
    return Coclusters(
        rows=model.row_labels_.astype(np.int64),
        cols=model.column_labels_.astype(np.int64),
        n_clusters=n_clusters,
    )


def cluster_layer(model: nn.Module, layer: str, n_clusters: int, seed: int = 0) -> Coclusters:
    """Co-cluster the weights of ``layer`` (|W|, or kernel norms for a conv layer)."""
    w = weight_module(model, layer).weight.detach()
    return cocluster(edge_weights(w).sqrt(), n_clusters, seed)


def clusterability(weight: torch.Tensor, clusters: Coclusters) -> torch.Tensor:
    """C(W, clusters): the share of squared weight inside clusters (a 0-d tensor, in [0, 1])."""
    sq = edge_weights(weight)
    inside = clusters.same_cluster(weight.device)
    return (sq * inside).sum() / sq.sum()


def enmeshment(weight: torch.Tensor, clusters: Coclusters) -> torch.Tensor:
    """1 − C(W, clusters): the enmeshment penalty, differentiable in W for fixed clusters."""
    return 1.0 - clusterability(weight, clusters)
