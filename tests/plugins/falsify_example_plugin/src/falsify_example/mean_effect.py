"""A test shape: is the mean single-unit ablation effect of a layer at least δ?

Per replicate and layer: the mean over the layer's units of the per-unit effect ``y`` (by
default the accuracy drop when each unit is ablated alone); the means are pooled over
replicates by a one-sample t, one part per layer. "Networks rely on single directions"
(Morcos et al. 2018) as a level claim rather than a comparison.
"""

from __future__ import annotations

from typing import Any, ClassVar, Literal

import pandas as pd
from pydantic import Field

from falsify.errors import LocatedError
from falsify.hypothesis.kinds import ShapeKind, UnitEffect
from falsify.hypothesis.types import Layers, Split
from falsify.shapes.base import Evidence, Figure, require_replicates
from falsify.stats import Part
from falsify.stats.paired import cohens_dz, paired_t

__all__ = ["MeanUnitEffectTest"]


class MeanUnitEffectTest(ShapeKind):
    """``kind: mean_unit_effect``: the mean per-unit effect of each layer, against 0."""

    kind: Literal["mean_unit_effect"]
    layers: Layers = Field(min_length=1)
    y: UnitEffect
    split: Split = "test"

    label: ClassVar[str] = "mean unit effect"
    docs: ClassVar[str] = "README.md"
    figure: ClassVar[str] = "replicate_statistics"
    simulator: ClassVar[str] = "targeted-vs-control"  # the same one-sample t over replicates
    example: ClassVar[dict[str, Any]] = {"layers": ["hidden1"], "y": {"kind": "unit_ablation"}}

    def check(self, hf: Any, model: Any, data: Any) -> None:
        if getattr(self.y, "metric", "") == "accuracy_drop" and hf.hypothesis.prediction.sesoi >= 1:
            raise LocatedError(
                ("prediction", "sesoi"), "below 1 (the effect is an accuracy drop)", 1
            )

    def evidence(self, hf: Any, data: Any, reps: list[Any]) -> Evidence:
        device = next(reps[0].model.parameters()).device
        x, y = (t.to(device) for t in data.split(self.split))
        rows, tidy = [], []
        for layer in self.layers:
            for rep in reps:
                effects = self.y.effects(rep.model, layer, x, y).cpu().numpy()
                rows.append({"part": layer, "seed": rep.seed, "statistic": float(effects.mean())})
                tidy += [
                    {"seed": rep.seed, "layer": layer, "unit": u, "effect": float(e)}
                    for u, e in enumerate(effects)
                ]
        replicates = pd.DataFrame(rows)
        parts = []
        for layer, sub in replicates.groupby("part", sort=False):
            d = sub["statistic"].to_numpy()
            require_replicates(f"layer {layer!r}", len(d))  # the one rule and message
            parts.append(
                Part(
                    name=str(layer),
                    estimate=paired_t(d),
                    n_replicates=len(d),
                    effect_size=cohens_dz(d),
                    effect_size_kind="Cohen's d_z",
                    method="per-replicate mean unit effect, one-sample t over replicates",
                )
            )
        labels = {"statistic": f"mean {self.y.describe()}", "part": "layer"}
        level = 1 - 2 * hf.hypothesis.prediction.alpha
        return Evidence(
            parts=parts,
            replicates=replicates,
            tidy=pd.DataFrame(tidy),
            tidy_grain="replicate × layer × unit",
            labels=labels,
            figures={"": Figure(self.figure, (replicates, labels, level))},
        )
