"""The targeted-vs-control shape (PRODUCT.md §3): paired differences pooled over replicates.

Each replicate (trained model) contributes one difference d = effect(targeted group) −
mean effect(matched random groups). The random draws inside one model only estimate that
model's control level; they are not independent samples of the claim, so the replicates are
the sample and the d are pooled by a one-sample t (df = n − 1), the paired t-test of the
targeted and control effects. The standardized effect size is Cohen's d_z = mean(d) / sd(d)
(Cohen 1988; Lakens 2013, Front. Psychol. 4:863, eq. 6). Beside it the report gives Hedges'
g_z = d_z · J(n − 1), d_z with the small-sample bias correction J of Hedges 1981 (J. Educ.
Stat. 6:107, eq. 6e) at the n − 1 degrees of freedom of the SD it divides by (Lakens 2013,
eq. 4 and the text below it; docs/verdicts.md, "Effect sizes").
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
from scipy import special

from falsify.stats.estimate import TEstimate

__all__ = ["cohens_dz", "hedges_g", "hedges_j", "paired_t"]


def paired_t(differences: Sequence[float]) -> TEstimate:
    """One-sample t estimate of the mean of per-replicate ``differences``."""
    d = np.asarray(differences, dtype=float)
    n = len(d)
    if n < 2:
        raise ValueError("a paired test needs at least two replicates")
    return TEstimate(float(d.mean()), float(d.std(ddof=1) / np.sqrt(n)), n - 1, "identity")


def cohens_dz(differences: Sequence[float]) -> float:
    """mean(d) / sd(d); NaN when every difference is the same (sd = 0)."""
    d = np.asarray(differences, dtype=float)
    sd = d.std(ddof=1)
    return float(d.mean() / sd) if sd > 0 else float("nan")


def hedges_j(df: float) -> float:
    """J(df) = Γ(df/2) / (√(df/2) · Γ((df − 1)/2)), exactly (log-gamma, finite for any df > 1)."""
    if df <= 1:
        return float("nan")
    return math.exp(special.gammaln(df / 2) - special.gammaln((df - 1) / 2)) / math.sqrt(df / 2)


def hedges_g(d: float, n: int) -> float:
    """Hedges' g of a standardized mean difference ``d`` over ``n`` values: d · J(n − 1)."""
    return float(d * hedges_j(n - 1))
