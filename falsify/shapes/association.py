"""The association shape (PRODUCT.md §3): per-unit x vs per-unit y within each model,
pooled over models."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, ClassVar, Literal

import numpy as np
import pandas as pd
from pydantic import Field

from falsify.data.stream import on_device
from falsify.errors import LocatedError
from falsify.hypothesis.kinds import ShapeKind, UnitEffect, UnitMeasure, register
from falsify.hypothesis.types import Layers, Split
from falsify.shapes.base import PARTS_TABLE, Evidence, Figure, require_replicates
from falsify.stats import Part, correlation, pool_correlations
from falsify.stats.association import fisher_z

if TYPE_CHECKING:
    from falsify.hypothesis.loader import HypothesisFile

__all__ = ["AssociationTest"]


@register
class AssociationTest(ShapeKind):
    """Per-unit x vs per-unit y within each model, pooled over models (PRODUCT.md §3)."""

    kind: Literal["association"]
    layers: Layers = Field(min_length=1)
    x: UnitMeasure
    y: UnitEffect
    correlation: Literal["spearman", "pearson", "kendall"] = "spearman"
    pooling: Literal["t", "random_effects"] = "t"
    split: Split = "test"

    streams: ClassVar[bool] = True
    label: ClassVar[str] = "association"
    docs: ClassVar[str] = "docs/verdicts.md"
    figure: ClassVar[str] = "association_scatter"
    simulator: ClassVar[str] = "association"
    example: ClassVar[dict[str, Any]] = {
        "layers": ["hidden1"],
        "x": {"kind": "class_selectivity"},
        "y": {"kind": "unit_ablation"},
    }

    def check(self, hf: HypothesisFile, model: Any, data: Any) -> None:
        """The effect of an association test is a correlation: the SESOI must be below 1."""
        if hf.hypothesis.prediction.sesoi >= 1:
            raise LocatedError(
                ("prediction", "sesoi"),
                "below 1 (an association test's effect is a correlation r)",
                hf.hypothesis.prediction.sesoi,
            )
        method = hf.hypothesis.prediction.method
        if self.pooling == "random_effects" and method != "t":
            raise LocatedError(
                ("prediction", "method"),
                "'t' with `test.pooling: random_effects` (a resampling method resamples the "
                "unweighted per-replicate Fisher z, which is `pooling: t`)",
                method,
            )

    def replicate_evidence(
        self, hf: HypothesisFile, data: Any, rep: Any
    ) -> list[tuple[pd.DataFrame, dict[str, Any]]]:
        """Per layer of one replicate: x and y for every unit, and their correlation."""
        test = self
        x_in, y_in = data.split(test.split)
        device = next(rep.model.parameters()).device
        x_in, y_in = on_device(x_in, device), y_in.to(device)
        out: list[tuple[pd.DataFrame, dict[str, Any]]] = []
        for layer in test.layers:
            xs = test.x.measure(rep.model, layer, x_in, y_in, data.n_classes).cpu().numpy()
            ys = test.y.effects(rep.model, layer, x_in, y_in).cpu().numpy()
            units = pd.DataFrame(
                {"seed": rep.seed, "layer": layer, "unit": np.arange(len(xs)), "x": xs, "y": ys}
            )
            row: dict[str, Any] = {
                "part": layer,
                "seed": rep.seed,
                "statistic": correlation(xs, ys, test.correlation),
                "n_units": len(xs),
                "test_accuracy": rep.test_accuracy,
                "mean_x": float(xs.mean()),
                "mean_y": float(ys.mean()),
            }
            out.append((units, row))
        return out

    def pooled_evidence(
        self,
        hf: HypothesisFile,
        data: Any,
        reps: list[Any],
        results: list[list[tuple[pd.DataFrame, dict[str, Any]]]],
    ) -> Evidence:
        """Every replicate's correlations, pooled per layer."""
        test = self
        unit_rows: list[pd.DataFrame] = []
        rep_rows: list[dict[str, Any]] = []
        parts: list[Part] = []
        notes: list[str] = []
        for li, layer in enumerate(test.layers):
            rs, ns = [], []
            for units, row in (r[li] for r in results):
                unit_rows.append(units)
                rep_rows.append(row)
                r = float(row["statistic"])
                if np.isnan(r):
                    notes.append(
                        f"Seed {row['seed']}, layer {layer}: the correlation is undefined (fewer "
                        "than 3 units, or x or y constant across units); this replicate is left "
                        "out of the pooled estimate."
                    )
                    continue
                rs.append(r)
                ns.append(len(units))
            require_replicates(f"layer {layer!r}", len(rs), notes)
            if test.pooling == "random_effects" and min(ns) <= 4:
                raise LocatedError(
                    ("test", "pooling"),
                    f"'t' for a layer of {min(ns)} units (random effects need more than 4)",
                    test.pooling,
                )
            est = pool_correlations(rs, ns, test.pooling, test.correlation)
            pooling = "t interval of Fisher z" if test.pooling == "t" else "random effects (HKSJ)"
            parts.append(
                Part(
                    name=layer,
                    estimate=est,
                    n_replicates=len(rs),
                    effect_size=est.claim_estimate,
                    effect_size_kind=f"{test.correlation} r",
                    method=f"per-replicate {test.correlation} r, pooled by {pooling}",
                    n_units=int(np.median(ns)),
                    values=tuple(fisher_z(rs)) if test.pooling == "t" else None,
                )
            )
        tidy = pd.concat(unit_rows, ignore_index=True)
        x, y = test.x.describe(), test.y.describe()
        labels = {"x": x, "y": y, "statistic": f"{test.correlation} r"}
        notes.insert(
            0,
            f"Per unit: x is the {x}, y the {y}; r is their {test.correlation} "
            "correlation over the layer's units, one per trained model.",
        )
        return Evidence(
            parts=parts,
            replicates=pd.DataFrame(rep_rows),
            tidy=tidy,
            tidy_grain="replicate × unit",
            labels=labels,
            figures={"": Figure(self.figure, (tidy, PARTS_TABLE, labels))},
            notes=notes,
        )
