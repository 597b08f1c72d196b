"""The enmeshment (clusterability) loss as a training-time regularizer: ``training.enmeshment``.

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
from typing import Any, ClassVar, Literal

import torch
from pydantic import Field
from torch import nn

from falsify.coclustering import Coclusters, cluster_layer, enmeshment
from falsify.errors import FalsifyError, LocatedError
from falsify.hypothesis.kinds import RegularizerKind, register
from falsify.hypothesis.types import Seed, WeightLayers
from falsify.units import default_layers, weight_module

__all__ = ["Enmeshment", "EnmeshmentTerm"]


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
    cluster_seed: Seed = 0
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


@register
class Enmeshment(RegularizerKind):
    """``training.enmeshment``: loss = CE + λ · mean over ``layers`` of (1 − C(W, clusters)).

    λ = 0 (the default) is off; ``k`` bipartite clusters per layer, re-clustered every
    ``recluster_every`` optimizer steps (None: once per epoch). Empty ``layers`` means every
    unit layer; each must be, or hold exactly one, linear or conv layer.
    """

    kind: Literal["enmeshment"] = Field("enmeshment", exclude=True)
    lam: float = Field(0.0, ge=0.0)
    k: int = Field(4, ge=2)
    recluster_every: int | None = Field(None, ge=1)
    layers: WeightLayers = ()

    label: ClassVar[str] = "enmeshment loss"
    docs: ClassVar[str] = "docs/modularity-and-attribution.md"
    streams: ClassVar[bool] = True  # reads weights, never the data
    example: ClassVar[dict[str, Any]] = {"lam": 0.1, "k": 3, "layers": ["hidden1"]}
    legacy_fields: ClassVar[dict[str, str]] = {
        "enmeshment_lambda": "lam",
        "enmeshment_layers": "layers",
        "enmeshment_k": "k",
        "enmeshment_recluster_every": "recluster_every",
    }

    @property
    def active(self) -> bool:
        return self.lam != 0

    def describe(self) -> str:
        return f"{self.label} (λ = {self.lam:g}, k = {self.k})"

    def check(self, model: nn.Module, loc: tuple[str | int, ...]) -> None:
        """The layers (named, or by default every unit layer) each hold one weight layer."""
        for layer in default_layers(model, self.layers):
            try:
                weight_module(model, layer)
            except FalsifyError:
                raise LocatedError(
                    (*loc, "layers"),
                    "layers that are, or hold exactly one, linear or conv layer (their weights "
                    f"are clustered); {layer!r} is not"
                    + ("" if self.layers else " (a default unit layer)"),
                    list(self.layers),
                ) from None

    def build(self, model: nn.Module, n_classes: int, steps_per_epoch: int) -> EnmeshmentTerm:
        every = self.recluster_every or max(steps_per_epoch, 1)
        return EnmeshmentTerm(self.lam, default_layers(model, self.layers), self.k, every)

    def recipe(self) -> dict[str, Any]:
        # The flat names the cache recipe has always used; none of them while λ = 0, so every
        # recipe without the term keeps the key it had before the term existed.
        if not self.active:
            return {}
        return {
            "enmeshment_lambda": self.lam,
            "enmeshment_layers": list(self.layers),
            "enmeshment_k": self.k,
            "enmeshment_recluster_every": self.recluster_every,
        }
