"""Executing the cluster-specialization test: clusters vs matched random groups, per replicate.

Golechha, Cope & Schoots (2024) train for modularity and report that the clusters of a layer
become specialized (ablating one hurts some classes far more than others); the 2025 follow-up
by the same group reports that clustered models do *not* show more task specialization. This
shape decides on the user's models (modularity.md, "Cluster ablation and specialization"):

    d = mean over clusters c of [ spec(damage of c) − mean over draws of spec(damage of a
        random group of |c| units) ]

per replicate and layer, where spec is the top-m share or the Gini coefficient of the per-class
accuracy drops (:mod:`falsify.measures.specialization`). The d are pooled over replicates by a
one-sample t (:mod:`falsify.stats.paired`): the random groups only estimate one model's control
level, so the replicates are the sample, as in the targeted-vs-control shape.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, ClassVar, Literal

import numpy as np
import pandas as pd
from pydantic import Field
from torch import nn

from falsify.coclustering import cluster_layer
from falsify.data.stream import on_device
from falsify.errors import FalsifyError, LocatedError
from falsify.hypothesis.kinds import ShapeKind, register
from falsify.hypothesis.types import Layers, Seed, Split
from falsify.hypothesis.units import Fill
from falsify.measures.specialization import cluster_damage, specialization_vs_random
from falsify.shapes.base import Evidence, Figure, require_replicates
from falsify.shapes.targeted import control_generator
from falsify.stats import Part
from falsify.stats.paired import cohens_dz, paired_t
from falsify.units import weight_module

if TYPE_CHECKING:
    from falsify.hypothesis.loader import HypothesisFile

__all__ = ["ClusterSpecializationTest"]

# One replicate's layer: its clusters' table, its row, and (seed, damage, cluster sizes).
_LayerResult = tuple[pd.DataFrame, dict[str, Any], tuple[int, np.ndarray, np.ndarray]]

_STATISTIC_LABELS = {"top_share": "top-{m} share of the damage", "gini": "Gini of the damage"}


@register
class ClusterSpecializationTest(ShapeKind):
    """Do a layer's weight clusters specialize in classes more than random groups of units?

    Golechha, Cope & Schoots (2024); modularity.md. Per replicate and layer: co-cluster the
    layer's incoming weights into ``k`` bipartite clusters, ablate each cluster's units and
    take the specialization of its per-class accuracy drops (``statistic``: the share of the
    damage on the ``m`` most damaged classes, or the Gini coefficient), minus the mean
    specialization of ``draws`` random groups of the same size. The replicate's difference is
    the mean over its clusters; differences are pooled over replicates by a one-sample t (the
    targeted-vs-control design of PRODUCT.md §3); every layer is one part.
    """

    kind: Literal["cluster_specialization"]
    layers: Layers = Field(min_length=1)
    k: int = Field(4, ge=2)
    statistic: Literal["top_share", "gini"] = "top_share"
    m: int = Field(1, ge=1)  # top_share only: the number of most damaged classes
    draws: int = Field(20, ge=2)
    control_seed: Seed = 0
    value: Fill = "zero"
    split: Split = "test"

    streams: ClassVar[bool] = True
    label: ClassVar[str] = "cluster specialization"
    docs: ClassVar[str] = "docs/modularity-and-attribution.md"
    figure: ClassVar[str] = "damage_heatmaps"
    simulator: ClassVar[str] = "targeted-vs-control"
    example: ClassVar[dict[str, Any]] = {"layers": ["hidden1"], "k": 2, "draws": 3}

    def check(self, hf: HypothesisFile, model: nn.Module, data: Any) -> None:
        """Every layer holds one linear or conv layer with at least ``k`` units on each side; m is
        below the number of classes."""
        test = self
        for i, layer in enumerate(test.layers):
            try:
                weight = weight_module(model, layer).weight
            except FalsifyError:
                raise LocatedError(
                    ("test", "layers", i),
                    "a layer that is, or holds exactly one, linear or conv "
                    "layer (its weights are co-clustered)",
                    layer,
                ) from None
            fits = min(weight.shape[0], weight.shape[1])
            if test.k > fits:
                raise LocatedError(
                    ("test", "k"),
                    f"at most {fits} (layer {layer!r} has {weight.shape[0]} units fed by "
                    f"{weight.shape[1]})",
                    test.k,
                )
        if test.statistic == "top_share" and test.m >= data.n_classes:
            raise LocatedError(
                ("test", "m"),
                f"below the number of classes ({data.n_classes}; the top {test.m} would take all "
                "the damage of every group)",
                test.m,
            )

    def replicate_evidence(self, hf: HypothesisFile, data: Any, rep: Any) -> list[_LayerResult]:
        """Per layer of one replicate: its clusters' and random groups' specialization, the
        replicate's mean difference, and the clusters' damage (for the heatmap)."""
        test = self
        device = next(rep.model.parameters()).device
        x, y = data.split(test.split)
        x, y = on_device(x, device), y.to(device)
        out: list[_LayerResult] = []
        for li, layer in enumerate(test.layers):
            clusters = cluster_layer(rep.model, layer, test.k)
            table = specialization_vs_random(
                rep.model,
                layer,
                x,
                y,
                clusters,
                data.n_classes,
                test.draws,
                control_generator(test.control_seed, rep.seed, li),
                test.statistic,
                test.m,
                test.value,
            )
            damage = cluster_damage(rep.model, layer, x, y, clusters, data.n_classes, test.value)
            sizes = np.bincount(clusters.rows, minlength=clusters.n_clusters)
            table.insert(0, "layer", layer)
            table.insert(0, "seed", rep.seed)
            defined = table.dropna(subset=["difference"])
            row = {
                "part": layer,
                "seed": rep.seed,
                "statistic": float(defined["difference"].mean()) if len(defined) else float("nan"),
                "cluster_mean": float(defined["specialization"].mean())
                if len(defined)
                else float("nan"),
                "random_mean": float(defined["random_mean"].mean())
                if len(defined)
                else float("nan"),
                "clusters_defined": len(defined),
                "test_accuracy": rep.test_accuracy,
            }
            out.append((table, row, (rep.seed, damage.cpu().numpy(), sizes)))
        return out

    def pooled_evidence(
        self,
        hf: HypothesisFile,
        data: Any,
        reps: list[Any],
        results: list[list[_LayerResult]],
    ) -> Evidence:
        """Every replicate's mean cluster − random specialization, pooled per layer."""
        test = self
        # layer-major, replicates in order within each layer
        cluster_rows = [r[li][0] for li in range(len(test.layers)) for r in results]
        rep_rows = [r[li][1] for li in range(len(test.layers)) for r in results]
        damages = {layer: [r[li][2] for r in results] for li, layer in enumerate(test.layers)}
        replicates = pd.DataFrame(rep_rows)
        parts: list[Part] = []
        notes: list[str] = []
        for layer, sub in replicates.groupby("part", sort=False):
            d = sub["statistic"].dropna().to_numpy()
            if len(d) < len(sub):
                notes.append(
                    f"{len(sub) - len(d)} replicate(s) of {layer} were left out: no cluster's "
                    "ablation damaged any class, so no specialization is defined."
                )
            require_replicates(f"layer {layer!r}", len(d), notes)
            parts.append(
                Part(
                    name=str(layer),
                    estimate=paired_t(d),
                    n_replicates=len(d),
                    effect_size=cohens_dz(d),
                    effect_size_kind="Cohen's d_z",
                    method=f"per-replicate mean over {test.k} clusters of cluster − mean of "
                    f"{test.draws} same-size random groups, one-sample t over replicates",
                    values=tuple(d),
                    standardized=True,
                )
            )
        stat = _STATISTIC_LABELS[test.statistic].format(m=test.m)
        labels = {
            "statistic": f"cluster − random {stat}",
            "specialization": stat,
            "part": "layer",
        }
        notes.append(
            f"Clusters: spectral co-clustering of each layer's |W| into k = {test.k}; random "
            f"groups: {test.draws} per cluster, of the cluster's size, drawn from control_seed "
            f"{test.control_seed} with the replicate's seed. A cluster (or random group) whose "
            "ablation damages no class has no specialization and is left out of its mean."
        )
        figures = {
            f"-damage-{layer}": Figure(self.figure, (rows, layer, "accuracy drop"))
            for layer, rows in damages.items()
        }
        return Evidence(
            parts=parts,
            replicates=replicates,
            tidy=pd.concat(cluster_rows, ignore_index=True),
            tidy_grain="replicate × layer × cluster",
            labels=labels,
            figures=figures,
            notes=notes,
        )
