"""The targeted-vs-control shape (PRODUCT.md §3): paired differences pooled over replicates.

Each replicate (trained model) contributes one difference d = effect(targeted group) −
mean effect(matched random groups). The random draws inside one model only estimate that
model's control level; they are not independent samples of the claim, so the replicates are
the sample and the d are pooled by a one-sample t (df = n − 1), the paired t-test of the
targeted and control effects. The standardized effect size is Cohen's d_z = mean(d) / sd(d)
(Cohen 1988; Lakens 2013, Front. Psychol. 4:863, eq. 6).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from falsify.stats.estimate import TEstimate

__all__ = ["cohens_dz", "paired_t"]


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
