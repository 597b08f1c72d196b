"""A pooled effect estimate with a t reference distribution, and its p-values and CIs.

Every test shape reduces its replicates to one ``TEstimate``: an estimate, a standard error and
degrees of freedom on a *test scale* (Fisher z for correlations, the claim's own units
otherwise). The verdict rules need p-values against several null values (0, ±δ); a t
distribution from scipy gives them all, and the (1 − 2α) CI, consistently.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal, get_args

import numpy as np
from scipy import stats

from falsify.stats._options import check_option

__all__ = ["TEstimate"]

Scale = Literal["identity", "fisher_z"]


@dataclass(frozen=True)
class TEstimate:
    """``(estimate − θ) / se`` follows Student's t with ``df`` degrees of freedom."""

    estimate: float
    se: float
    df: float
    scale: Scale = "identity"

    def __post_init__(self) -> None:
        check_option("scale", self.scale, get_args(Scale))

    def to_test(self, value: float) -> float:
        """Map a value in the claim's units (e.g. a correlation r) to the test scale."""
        if self.scale == "fisher_z":
            return float(np.arctanh(np.clip(value, -1 + 1e-12, 1 - 1e-12)))
        return float(value)

    def to_claim(self, value: float) -> float:
        """Map a value on the test scale back to the claim's units."""
        return float(np.tanh(value)) if self.scale == "fisher_z" else float(value)

    @property
    def claim_estimate(self) -> float:
        return self.to_claim(self.estimate)

    def ci(self, level: float) -> tuple[float, float]:
        """Two-sided ``level`` confidence interval, in the claim's units."""
        if self.se == 0:
            return self.claim_estimate, self.claim_estimate
        lo, hi = stats.t.interval(level, self.df, loc=self.estimate, scale=self.se)
        return self.to_claim(lo), self.to_claim(hi)

    def p_greater(self, null: float) -> float:
        """One-sided p of H0: θ ≤ ``null`` (null in the claim's units)."""
        return self._p(self.to_test(null), upper=True)

    def p_less(self, null: float) -> float:
        """One-sided p of H0: θ ≥ ``null`` (null in the claim's units)."""
        return self._p(self.to_test(null), upper=False)

    def _p(self, null: float, upper: bool) -> float:
        diff = self.estimate - null if upper else null - self.estimate
        if self.se == 0 or not math.isfinite(self.se):
            return 0.0 if diff > 0 else 1.0
        return float(stats.t.sf(diff / self.se, self.df))
