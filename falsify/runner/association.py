"""Executing the association shape (PRODUCT.md §3) on a population's replicates."""

from __future__ import annotations

from functools import partial

import numpy as np
import pandas as pd
from torch import nn

from falsify.data import Dataset
from falsify.errors import FalsifyError
from falsify.hypothesis.loader import HypothesisFile
from falsify.hypothesis.schema import AssociationTest
from falsify.interventions import unit_effects
from falsify.measures import measure_units
from falsify.report.figures import association_scatter
from falsify.runner.outcome import Outcome
from falsify.runner.replicates import Replicate
from falsify.stats import Part, correlation, decide, pool_correlations

__all__ = ["check_association", "run_association"]

_X_LABELS = {
    "class_selectivity": "class selectivity index",
    "layer_conductance": "mean |layer conductance|",
    "layer_integrated_gradients": "mean |layer integrated gradients|",
    "gradient_x_activation": "mean |gradient × activation|",
}
_Y_LABELS = {
    "accuracy_drop": "accuracy drop when ablated",
    "loss_increase": "loss increase when ablated",
}


def check_association(hf: HypothesisFile, _model: nn.Module, _data: Dataset) -> None:
    """The effect of an association test is a correlation: the SESOI must be below 1."""
    if hf.hypothesis.prediction.sesoi >= 1:
        raise hf.error(
            ("prediction", "sesoi"),
            "below 1 (an association test's effect is a correlation r)",
            hf.hypothesis.prediction.sesoi,
        )


def run_association(hf: HypothesisFile, data: Dataset, reps: list[Replicate]) -> Outcome:
    """Per replicate and layer: x and y for every unit, their correlation; pooled per layer."""
    hyp = hf.hypothesis
    test = hyp.test
    assert isinstance(test, AssociationTest)
    x_in, y_in = data.split(test.split)
    x_in = x_in.to(next(reps[0].model.parameters()).device)
    y_in = y_in.to(x_in.device)
    unit_rows: list[pd.DataFrame] = []
    rep_rows: list[dict[str, object]] = []
    parts: list[Part] = []
    notes: list[str] = []
    for layer in test.layers:
        rs, ns = [], []
        for rep in reps:
            xs = measure_units(test.x, rep.model, layer, x_in, y_in, data.n_classes).cpu().numpy()
            ys = unit_effects(test.y, rep.model, layer, x_in, y_in).cpu().numpy()
            r = correlation(xs, ys, test.correlation)
            unit_rows.append(
                pd.DataFrame(
                    {"seed": rep.seed, "layer": layer, "unit": np.arange(len(xs)), "x": xs, "y": ys}
                )
            )
            rep_rows.append(
                {
                    "part": layer,
                    "seed": rep.seed,
                    "statistic": r,
                    "n_units": len(xs),
                    "test_accuracy": rep.test_accuracy,
                    "mean_x": float(xs.mean()),
                    "mean_y": float(ys.mean()),
                }
            )
            if np.isnan(r):
                notes.append(
                    f"Seed {rep.seed}, layer {layer}: the correlation is undefined (fewer than 3 "
                    "units, or x or y constant across units); this replicate is left out of the "
                    "pooled estimate."
                )
                continue
            rs.append(r)
            ns.append(len(xs))
        if len(rs) < 2:
            raise FalsifyError(
                f"{hf.path}: layer {layer!r} has {len(rs)} replicate(s) with a defined "
                "correlation; at least 2 are needed for a confidence interval, so no verdict is "
                "given. " + " ".join(notes)
            )
        if test.pooling == "random_effects" and min(ns) <= 4:
            raise hf.error(
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
            )
        )
    table, verdict = decide(parts, hyp.prediction)
    tidy = pd.concat(unit_rows, ignore_index=True)
    labels = {
        "x": _X_LABELS.get(test.x.kind, test.x.kind),
        "y": _Y_LABELS.get(test.y.metric, test.y.metric),
        "statistic": f"{test.correlation} r",
    }
    return Outcome(
        file=hf,
        verdict=verdict,
        parts=table,
        replicates=pd.DataFrame(rep_rows),
        tidy=tidy,
        tidy_grain="replicate × unit",
        labels=labels,
        figures={"": partial(association_scatter, tidy, table, labels)},
        notes=notes,
    )
