"""How many replicates a conclusive run would likely need (PRODUCT.md §4, INCONCLUSIVE)."""

from __future__ import annotations

import math

import numpy as np
from statsmodels.stats.power import TTestPower

from falsify.stats._options import check_option
from falsify.stats.estimate import TEstimate
from falsify.stats.resampling import EXACT_MAX, METHODS, min_replicates
from falsify.stats.verdict import DIRECTIONS

__all__ = ["planned_by", "replicates_needed"]

# How the sample size of each `prediction.method` is planned, for the report's power note.
_PLANNED_BY = {
    "t": "the power of the one-sample t-test (statsmodels TTestPower)",
    "permutation": "the power of the one-sample t-test (statsmodels TTestPower), which the "
    "sign-flip test of the mean matches in large samples (Hoeffding 1952, Ann. Math. Statist. "
    "23:169); up to 13 replicates, where the test is exact and its discreteness costs power, "
    "by the simulated power of the exact sign-flip test on normal replicates",
    "bootstrap": "the power of the one-sample t-test (statsmodels TTestPower), which the BCa "
    "bootstrap of the mean matches to first order (Hall 1992, The Bootstrap and Edgeworth "
    "Expansion, ch. 3), and no fewer than the bootstrap is offered for",
}
_SIMULATIONS = 2_000  # Monte Carlo SE of a power near 0.8: 0.009
_SEED = 0


def _sign_flip_power(effect_size: float, n: int, alpha: float) -> float:
    """The power of the exact one-sided sign-flip test (``resampling.sign_flip_estimate``) at
    level ``alpha`` for ``n`` normal replicates with mean/sd ``effect_size``, simulated."""
    signs = 1 - 2 * ((np.arange(2**n)[:, None] >> np.arange(n)) & 1)  # [2ⁿ, n]
    x = np.random.default_rng(_SEED).normal(effect_size, 1.0, size=(_SIMULATIONS, n))
    observed = x.sum(axis=1, keepdims=True)  # [sims, 1]
    gamma = 100 * np.finfo(float).eps * np.abs(x).sum(axis=1, keepdims=True)
    p = np.count_nonzero(x @ signs.T >= observed - gamma, axis=1) / 2**n
    return float(np.mean(p < alpha))


def planned_by(method: str) -> str:
    """What :func:`replicates_needed` assumes for ``method`` (docs/verdicts.md, power note)."""
    check_option("method", method, METHODS)
    return _PLANNED_BY[method]


def replicates_needed(
    est: TEstimate,
    n_replicates: int,
    direction: str,
    sesoi: float,
    alpha: float,
    power: float = 0.8,
    max_n: int = 10_000,
    method: str = "t",
) -> int | None:
    """Replicates for ``power`` to reach *some* verdict if the observed estimate and spread hold.

    The per-replicate spread is recovered from the pooled standard error (sd = se·√k). The
    distance to a decision is the larger of the two one-sided tests' distances (for a directional
    claim: the estimate's distance from 0 for SUPPORTED, from δ for FALSIFIED; for ``none``:
    the distance of |estimate| from δ). The sample size is from statsmodels' one-sample t-test
    power. For ``method`` ``bootstrap`` or ``permutation`` the t sample size is kept, since both
    match the t-test of the mean asymptotically (:func:`planned_by`), and raised to the fewest
    replicates the method is offered for at ``alpha`` (``resampling.min_replicates``), so the
    suggested run can reach a verdict; for ``permutation`` it is raised further while the exact
    sign-flip test's simulated power falls short (:func:`_sign_flip_power`). None when the estimate sits exactly on a boundary (no
    finite n decides).
    """
    check_option("direction", direction, DIRECTIONS)
    floor = min_replicates(method, alpha)
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
    n = max(n_replicates + 1, math.ceil(n), floor)
    if method == "permutation":
        while 2**n <= EXACT_MAX and _sign_flip_power(distance / sd, n, alpha) < power:
            n += 1
    return n
