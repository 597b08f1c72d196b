"""From per-part estimates to adjusted p-values and verdicts, as one tidy table."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd
from statsmodels.stats.multitest import multipletests

from falsify.hypothesis.schema import Prediction
from falsify.stats._options import check_option
from falsify.stats.estimate import TEstimate
from falsify.stats.power import replicates_needed
from falsify.stats.verdict import Verdict, combine_verdicts, p_values, verdict_from_p

__all__ = ["Part", "decide"]


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


def _adjust(p: np.ndarray, how: str) -> np.ndarray:
    check_option("adjust", how, ("holm", "bonferroni", "none"))
    if how == "none" or len(p) == 1:
        return p
    return multipletests(p, method=how)[1]


def decide(parts: list[Part], prediction: Prediction) -> tuple[pd.DataFrame, Verdict]:
    """One row per part (estimate, CI, raw and adjusted p, verdict) and the overall verdict.

    The CI is the (1 − 2α) interval of §4. With several parts, the p-values behind SUPPORTED
    and behind FALSIFIED are each adjusted within the hypothesis (Holm by default) and each
    part's verdict is read from its adjusted p-values; with one part this is exactly the
    interval rule.
    """
    level = 1 - 2 * prediction.alpha
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
                "method": part.method,
                "direction": direction,
            }
        )
    table = pd.DataFrame(rows)
    table["p_support_adj"] = _adjust(table["p_support"].to_numpy(), prediction.adjust)
    table["p_falsify_adj"] = _adjust(table["p_falsify"].to_numpy(), prediction.adjust)
    verdicts = [
        verdict_from_p(s, f, prediction.alpha)
        for s, f in zip(table["p_support_adj"], table["p_falsify_adj"], strict=True)
    ]
    table["verdict"] = [v.value for v in verdicts]
    # With several parts, plan for the Bonferroni level: Holm's first step, a safe bound.
    alpha_each = prediction.alpha / (len(parts) if prediction.adjust != "none" else 1)
    table["replicates_needed"] = [
        replicates_needed(
            part.estimate,
            part.n_replicates,
            part.direction or prediction.direction,
            prediction.sesoi,
            alpha_each,
        )
        if v is Verdict.INCONCLUSIVE
        else None
        for part, v in zip(parts, verdicts, strict=True)
    ]
    return table, combine_verdicts(verdicts, prediction.combine)
