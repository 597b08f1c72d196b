"""How many replicates a conclusive run would likely need (PRODUCT.md §4, INCONCLUSIVE)."""

from __future__ import annotations

import math

from statsmodels.stats.power import TTestPower

from falsify.stats._options import check_option
from falsify.stats.estimate import TEstimate
from falsify.stats.verdict import DIRECTIONS

__all__ = ["replicates_needed"]


def replicates_needed(
    est: TEstimate,
    n_replicates: int,
    direction: str,
    sesoi: float,
    alpha: float,
    power: float = 0.8,
    max_n: int = 10_000,
) -> int | None:
    """Replicates for ``power`` to reach *some* verdict if the observed estimate and spread hold.

    The per-replicate spread is recovered from the pooled standard error (sd = se·√k). The
    distance to a decision is the larger of the two one-sided tests' distances (for a directional
    claim: the estimate's distance from 0 for SUPPORTED, from δ for FALSIFIED; for ``none``:
    the distance of |estimate| from δ). The sample size is from statsmodels' one-sample t-test
    power. None when the estimate sits exactly on a boundary (no finite n decides).
    """
    check_option("direction", direction, DIRECTIONS)
    theta = est.estimate
    sign = -1.0 if direction == "negative" else 1.0
    zero, delta = est.to_test(0.0), est.to_test(sesoi)
    if direction == "none":
        distance = abs(delta - abs(theta - zero))
    else:
        oriented = sign * (theta - zero)
        distance = max(oriented, (delta - zero) - oriented)
    sd = est.se * math.sqrt(n_replicates)
    if distance <= 0 or sd <= 0:
        return None
    n = TTestPower().solve_power(
        effect_size=distance / sd, alpha=alpha, power=power, alternative="larger"
    )
    if not math.isfinite(n) or n > max_n:
        return None
    return max(n_replicates + 1, math.ceil(n))
