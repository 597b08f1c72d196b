"""The power note's plan fits the configured `prediction.method` (docs/verdicts.md)."""

from __future__ import annotations

import math

import numpy as np
import pytest

from falsify.hypothesis.schema import Prediction
from falsify.stats.decide import Part, decide
from falsify.stats.estimate import TEstimate
from falsify.stats.power import planned_by, replicates_needed
from falsify.stats.resampling import METHODS, min_replicates, sign_flip_estimate


def _estimate(mean: float, sd: float, k: int) -> TEstimate:
    return TEstimate(mean, sd / math.sqrt(k), k - 1)


def test_t_plan_is_statsmodels_sample_size() -> None:
    # distance to a decision max(0.05, 0.1 − 0.05) = 0.05, sd 0.15: effect size 1/3.
    # statsmodels: TTestPower().solve_power(effect_size=0.05 / 0.15, alpha=0.05, power=0.8,
    #     alternative="larger")  ->  57.02
    assert replicates_needed(_estimate(0.05, 0.15, 5), 5, "positive", 0.1, 0.05) == 58


def test_bootstrap_plan_is_at_least_what_the_bootstrap_is_offered_for() -> None:
    # effect size 1.5: statsmodels TTestPower().solve_power(effect_size=1.5, alpha=0.05,
    #     power=0.8, alternative="larger")  ->  4.44, so t plans 5 replicates.
    est = _estimate(0.45, 0.3, 3)
    assert replicates_needed(est, 3, "positive", 0.1, 0.05) == 5
    n = replicates_needed(est, 3, "positive", 0.1, 0.05, method="bootstrap")
    assert n == min_replicates("bootstrap", 0.05)


def _simulated_sign_flip_power(effect_size: float, n: int, alpha: float) -> float:
    # Independent of the planner: the project's sign-flip estimate on fresh normal samples.
    rng = np.random.default_rng(12345)
    hits = [
        sign_flip_estimate(rng.normal(effect_size, 1.0, n)).p_greater(0.0) < alpha
        for _ in range(600)
    ]
    return float(np.mean(hits))


@pytest.mark.parametrize(("effect_size", "alpha"), [(1.5, 0.05), (1.5, 0.0125), (1.0, 0.05)])
def test_permutation_plan_reaches_the_promised_power(effect_size: float, alpha: float) -> None:
    # The exact sign-flip test loses power to its discreteness at few replicates: at the t plan
    # (statsmodels TTestPower().solve_power(effect_size=1.5, alpha=0.05, power=0.8,
    # alternative="larger") -> 4.44, i.e. 5) its power is about 0.7, so the plan must be larger.
    sd = 0.3
    est = _estimate(effect_size * sd, sd, 3)
    n_t = replicates_needed(est, 3, "positive", 0.0, alpha)
    n = replicates_needed(est, 3, "positive", 0.0, alpha, method="permutation")
    assert n is not None and n_t is not None and n >= max(n_t, min_replicates("permutation", alpha))
    se = math.sqrt(0.8 * 0.2 / 600)
    assert _simulated_sign_flip_power(effect_size, n, alpha) >= 0.8 - 3 * se
    if n > n_t:
        assert _simulated_sign_flip_power(effect_size, n - 1, alpha) < 0.8 + 3 * se


def test_decide_plans_for_the_method_and_the_report_says_which() -> None:
    # Seven replicates, one of them negative: the sign-flip p (2/128) misses α = 0.01.
    values = (0.5, 0.6, 0.4, 0.55, 0.45, 0.5, -0.2)
    est = _estimate(float(np.mean(values)), float(np.std(values, ddof=1)), len(values))
    part = Part("a", est, len(values), 1.0, "d_z", "t", values=values)
    pred = Prediction(direction="positive", sesoi=0.1, alpha=0.01, method="permutation")
    table, _ = decide([part], pred)
    assert table["verdict"].iloc[0] == "INCONCLUSIVE"
    planned = replicates_needed(est, len(values), "positive", 0.1, 0.01, method="permutation")
    assert table["replicates_needed"].iloc[0] == planned
    assert planned > replicates_needed(est, len(values), "positive", 0.1, 0.01)
    for method in METHODS:
        assert "TTestPower" in planned_by(method)
    assert "sign-flip" in planned_by("permutation") and "bootstrap" in planned_by("bootstrap")
