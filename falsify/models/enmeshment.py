"""The enmeshment (clusterability) loss as a training-time regularizer term.

Golechha, Cope & Schoots (2024), "Training neural networks for modularity aids
interpretability" (spec: modularity.md): loss = CE + λ · mean over the named layers of
(1 − C(W, clusters)), where C is the share of a layer's squared weight inside its bipartite
clusters (:mod:`falsify.coclustering`). The clusters are recomputed by spectral
co-clustering of the current |W| every ``recluster_every`` optimizer steps (by default once per
epoch) and held fixed in between, so the term is differentiable in W between re-clusterings:
its gradient moves weight mass into the current clusters.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

import torch
from torch import nn

from falsify.coclustering import Coclusters, cluster_layer, enmeshment
from falsify.units import weight_module

__all__ = ["EnmeshmentTerm"]


@dataclass
class EnmeshmentTerm:
    """λ · mean over ``weight_layers`` of (1 − C(W, clusters)); clusters refreshed every
    ``recluster_every`` calls (one call per optimizer step), starting with the first.

    The term keeps its own step counter and the clusters in force, so one term object serves
    one training run. Co-clustering uses ``cluster_seed`` (fixed), so the same weights give the
    same clusters and training stays deterministic.
    """

    lam: float
    weight_layers: tuple[str, ...]
    n_clusters: int
    recluster_every: int
    cluster_seed: int = 0
    name: str = "enmeshment"
    layers: tuple[str, ...] = ()  # reads weights, not activations
    steps: int = field(default=0, init=False)
    clusters: dict[str, Coclusters] = field(default_factory=dict, init=False)

    def recluster(self, model: nn.Module) -> None:
        """Co-cluster every named layer's current weights and hold the result."""
        self.clusters = {
            layer: cluster_layer(model, layer, self.n_clusters, self.cluster_seed)
            for layer in self.weight_layers
        }

    def __call__(
        self, model: nn.Module, activations: Mapping[str, torch.Tensor], labels: torch.Tensor
    ) -> torch.Tensor:
        if self.steps % self.recluster_every == 0:
            self.recluster(model)
        self.steps += 1
        penalty = torch.stack(
            [
                enmeshment(weight_module(model, layer).weight, self.clusters[layer])
                for layer in self.weight_layers
            ]
        )
        return self.lam * penalty.mean()
