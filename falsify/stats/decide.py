"""From per-part estimates to adjusted p-values and verdicts, as one tidy table."""

from __future__ import annotations

from dataclasses import dataclass, replace

import numpy as np
import pandas as pd

from falsify.errors import LocatedError
from falsify.hypothesis.schema import Prediction
from falsify.stats._options import check_option
from falsify.stats.estimate import TEstimate
from falsify.stats.paired import hedges_g
from falsify.stats.power import replicates_needed
from falsify.stats.resampling import check_method, describe_method, resample
from falsify.stats.verdict import Verdict, combine_verdicts, p_values, verdict_from_p

__all__ = ["ADJUSTMENT_NAMES", "Part", "adjustments", "decide", "part_verdicts", "with_method"]

# The multiplicity adjustments `prediction.adjust` offers, and their proper names in a report
# (Holm 1979; Bonferroni).
ADJUSTMENT_NAMES = {"holm": "Holm", "bonferroni": "Bonferroni", "none": "none"}


@dataclass(frozen=True)
class Part:
    """One tested quantity of a hypothesis (a layer, a k, a contrast) and its pooled estimate."""

    name: str
    estimate: TEstimate
    n_replicates: int
    effect_size: float
    effect_size_kind: str
    method: str
    n_units: int | None = None
    # The direction this part predicts when it differs from the hypothesis's prediction
    # (e.g. one outcome predicted to fall and another to rise); None: the prediction's.
    direction: str | None = None
    # The per-replicate values, on the estimate's test scale, whose mean is the estimate:
    # what `prediction.method: bootstrap | permutation` resamples. None: only `t` is offered.
    values: tuple[float, ...] | None = None
    # effect_size is a standardized mean difference of n_replicates values (d_z or d): the
    # table gives Hedges' g beside it.
    standardized: bool = False


def _adjust(p: np.ndarray, how: str) -> np.ndarray:
    check_option("adjust", how, tuple(ADJUSTMENT_NAMES))
    if how == "none" or len(p) == 1:
        return p
    m = len(p)
    if how == "bonferroni":
        return np.minimum(1.0, m * p)
    # Holm (1979) step-down, as statsmodels' multipletests(p, method="holm") computes it (the
    # tests compare the two); statsmodels runs gc.collect() on every call, 0.15 s, which made
    # calibrating multi-part verdicts take hours.
    order = np.argsort(p)
    stepped = np.minimum(1.0, np.maximum.accumulate((m - np.arange(m)) * p[order]))
    out = np.empty(m)
    out[order] = stepped
    return out


def adjustments(combine: str, adjust: str) -> tuple[str, str]:
    """How ``(p_support, p_falsify)`` are adjusted across the parts under ``combine``.

    ``all``: the claim is SUPPORTED only when every part is, an intersection–union test whose
    parts each need only level α (Berger 1982, Technometrics 24:295), so p_support is left
    unadjusted; FALSIFIED when *some* part is, a union of rejections whose family-wise error
    needs ``adjust``. ``any`` is the mirror image: p_support gets ``adjust``, p_falsify none.
    """
    check_option("combine", combine, ("all", "any"))
    check_option("adjust", adjust, tuple(ADJUSTMENT_NAMES))
    return ("none", adjust) if combine == "all" else (adjust, "none")


def part_verdicts(
    p_support: np.ndarray, p_falsify: np.ndarray, alpha: float, combine: str, adjust: str
) -> tuple[np.ndarray, np.ndarray, list[Verdict]]:
    """Adjusted ``p_support``, ``p_falsify`` (see :func:`adjustments`) and each part's verdict."""
    how_support, how_falsify = adjustments(combine, adjust)
    sup = _adjust(np.asarray(p_support, dtype=float), how_support)
    fal = _adjust(np.asarray(p_falsify, dtype=float), how_falsify)
    return sup, fal, [verdict_from_p(s, f, alpha) for s, f in zip(sup, fal, strict=True)]


def with_method(part: Part, method: str, alpha: float) -> Part:
    """``part`` with its estimate replaced by ``method``'s (``t``: unchanged).

    A part without per-replicate values, or with too few for ``method`` at level ``alpha``
    (:func:`falsify.stats.resampling.check_method`), is a located error on
    ``prediction.method``.
    """
    if method == "t":
        return part
    if part.values is None:
        raise LocatedError(
            ("prediction", "method"),
            f"'t' for {part.name} (its estimate is not a mean of per-replicate values, so "
            f"there is nothing for {method!r} to resample)",
            method,
        )
    check_method(method, alpha, len(part.values), part.name)
    est = resample(np.asarray(part.values), method, part.estimate.scale)
    return replace(part, estimate=est)


def decide(parts: list[Part], prediction: Prediction) -> tuple[pd.DataFrame, Verdict]:
    """One row per part (estimate, CI, raw and adjusted p, verdict) and the overall verdict.

    The CI is the (1 − 2α) interval of §4. With several parts, the p-value whose verdict needs
    only one part (FALSIFIED under ``combine: all``, SUPPORTED under ``any``) is adjusted within
    the hypothesis (Holm by default) and the other is not (:func:`adjustments`); each part's
    verdict is read from these p-values, and the columns ``p_support_adjustment`` and
    ``p_falsify_adjustment`` say which was adjusted how. With one part this is exactly the
    interval rule.
    """
    level = 1 - 2 * prediction.alpha
    parts = [with_method(part, prediction.method, prediction.alpha) for part in parts]
    rows = []
    for part in parts:
        lo, hi = part.estimate.ci(level)
        direction = part.direction or prediction.direction
        p_sup, p_fal = p_values(part.estimate, direction, prediction.sesoi)
        rows.append(
            {
                "part": part.name,
                "estimate": part.estimate.claim_estimate,
                "ci_low": lo,
                "ci_high": hi,
                "ci_level": level,
                "p_support": p_sup,
                "p_falsify": p_fal,
                "n_replicates": part.n_replicates,
                "n_units": part.n_units,
                "effect_size": part.effect_size,
                "effect_size_kind": part.effect_size_kind,
                "hedges_g": (
                    hedges_g(part.effect_size, part.n_replicates)
                    if part.standardized
                    else float("nan")
                ),
                "method": part.method,
                "inference": describe_method(part.estimate),
                "direction": direction,
            }
        )
    table = pd.DataFrame(rows)
    sup, fal, verdicts = part_verdicts(
        table["p_support"].to_numpy(),
        table["p_falsify"].to_numpy(),
        prediction.alpha,
        prediction.combine,
        prediction.adjust,
    )
    how_support, how_falsify = adjustments(prediction.combine, prediction.adjust)
    single = len(parts) == 1
    table["p_support_adj"] = sup
    table["p_support_adjustment"] = "none" if single else how_support
    table["p_falsify_adj"] = fal
    table["p_falsify_adjustment"] = "none" if single else how_falsify
    table["verdict"] = [v.value for v in verdicts]
    # With several parts, plan for the Bonferroni level (Holm's first step) of the adjusted
    # side: a safe bound for both verdicts, since the other side keeps α.
    alpha_each = prediction.alpha / (len(parts) if prediction.adjust != "none" else 1)
    table["replicates_needed"] = [
        replicates_needed(
            part.estimate,
            part.n_replicates,
            part.direction or prediction.direction,
            prediction.sesoi,
            alpha_each,
            method=prediction.method,
        )
        if v is Verdict.INCONCLUSIVE
        else None
        for part, v in zip(parts, verdicts, strict=True)
    ]
    return table, combine_verdicts(verdicts, prediction.combine)
