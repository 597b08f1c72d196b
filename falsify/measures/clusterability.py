"""Bipartite clustering of a layer's weights and its clusterability (Golechha, Cope & Schoots
2024, "Training neural networks for modularity aids interpretability"; spec: modularity.md).

A linear layer with weight W ``[out, in]`` is a bipartite graph between its input and output
units with edge weights |W_ij|; a conv layer's graph is its channel-to-channel matrix of kernel
norms ‖W[o, i, :, :]‖. :func:`cocluster` splits the graph into k bipartite clusters (each a set
of output units and a set of input units) by spectral co-clustering (Dhillon 2001, "Co-clustering
documents and words using bipartite spectral graph partitioning", KDD), with scikit-learn's
``SpectralCoclustering``. Clusterability is the share of the squared weight mass inside clusters,

    C(W, clusters) = Σ_{(i, j) same cluster} W_ij² / Σ_{(i, j)} W_ij²,

(for a conv layer W_oi² is the squared kernel norm, Σ over the kernel of W[o, i, ·, ·]²). Its
baseline is the expected C under a random partition with the same cluster sizes: an edge (i, j)
falls inside a cluster with probability Σ_c (r_c / R)(s_c / S) whatever its weight (r_c of the
R output units and s_c of the S input units are in cluster c), so the expectation is exactly
that sum — 1/k for k equal clusters. :func:`enmeshment` = 1 − C is differentiable in W for
fixed clusters: the training-time penalty of modularity.md.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pandas as pd
import torch
from torch import nn

from falsify.coclustering import (
    Coclusters,
    cluster_layer,
    clusterability,
    cocluster,
    edge_weights,
    enmeshment,
)
from falsify.units import weight_module

__all__ = [
    "Coclusters",
    "cluster_layer",
    "clusterability",
    "cocluster",
    "edge_weights",
    "enmeshment",
    "model_clusterability",
    "random_partition_clusterability",
    "shuffled_clusterability",
    "weight_module",
]


def random_partition_clusterability(clusters: Coclusters) -> float:
    """Expected C under a random partition with the same cluster sizes: Σ_c (r_c/R)(s_c/S)."""
    k = clusters.n_clusters
    r = np.bincount(clusters.rows, minlength=k) / len(clusters.rows)
    s = np.bincount(clusters.cols, minlength=k) / len(clusters.cols)
    return float(r @ s)


def shuffled_clusterability(
    weight: torch.Tensor, n_clusters: int, draws: int, generator: torch.Generator, seed: int = 0
) -> np.ndarray:
    """C of the co-clustering of ``draws`` copies of ``weight`` with its edges shuffled: ``[draws]``.

    The random-partition baseline is the null of a *random* partition; co-clustering *chooses*
    the partition, and on a matrix without structure it still finds one above that baseline
    (the excess shrinks as the layer grows: about +0.14 at 60 × 55 units and +0.07 at 240 × 240
    for 3 clusters). Shuffling the edges (kernel-norm edges of a conv layer, whole kernels)
    keeps the weight distribution and destroys the structure, so this is the null of "as
    clusterable as this layer's weights are by chance, after the clusterer's own search".
    """
    sq = edge_weights(weight.detach())
    out = np.empty(draws)
    for d in range(draws):
        perm = torch.randperm(sq.numel(), generator=generator).to(sq.device)
        shuffled = sq.flatten()[perm].view_as(sq).sqrt()
        out[d] = float(clusterability(shuffled, cocluster(shuffled, n_clusters, seed)))
    return out


def model_clusterability(
    model: nn.Module,
    layers: Sequence[str],
    n_clusters: int,
    seed: int = 0,
    shuffle_draws: int = 0,
    generator: torch.Generator | None = None,
) -> pd.DataFrame:
    """One row per named layer (layer, n_clusters, clusterability, random_baseline, and with
    ``shuffle_draws > 0`` shuffled_baseline, the mean of :func:`shuffled_clusterability`) and a
    last row ``layer = "mean"``: the model's clusterability, the mean over the named layers."""
    if shuffle_draws > 0 and generator is None:
        raise ValueError("shuffle_draws > 0 needs a torch.Generator for the shuffles")
    rows = []
    for layer in layers:
        w = weight_module(model, layer).weight.detach()
        clusters = cocluster(edge_weights(w).sqrt(), n_clusters, seed)
        row = {
            "layer": layer,
            "n_clusters": n_clusters,
            "clusterability": float(clusterability(w, clusters)),
            "random_baseline": random_partition_clusterability(clusters),
        }
        if shuffle_draws > 0 and generator is not None:
            null = shuffled_clusterability(w, n_clusters, shuffle_draws, generator, seed)
            row["shuffled_baseline"] = float(null.mean())
        rows.append(row)
    table = pd.DataFrame(rows)
    mean = {"layer": "mean", "n_clusters": n_clusters}
    mean |= table.drop(columns=["layer", "n_clusters"]).mean().to_dict()
    return pd.concat([table, pd.DataFrame([mean])], ignore_index=True)
