from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from falsify.hypothesis.schema import Prediction
from falsify.stats import (
    Part,
    TEstimate,
    Verdict,
    combine_verdicts,
    correlation,
    decide,
    p_values,
    pool_correlations,
    verdict_from_ci,
    verdict_from_p,
)
from falsify.stats.association import fisher_z_variance
from falsify.stats.power import replicates_needed

S, F, INC = Verdict.SUPPORTED, Verdict.FALSIFIED, Verdict.INCONCLUSIVE
finite = st.floats(-5, 5, allow_nan=False)
sesoi = st.floats(0, 2, allow_nan=False)


@st.composite
def intervals(draw):
    a, b = draw(finite), draw(finite)
    return min(a, b), max(a, b)


@given(intervals(), sesoi)
def test_flipping_the_prediction_mirrors_the_verdict(ci, delta) -> None:
    lo, hi = ci
    # A positive claim on [lo, hi] is the negative claim on the mirrored interval.
    assert verdict_from_ci(lo, hi, "positive", delta) == verdict_from_ci(
        -hi, -lo, "negative", delta
    )


@given(intervals(), sesoi)
def test_none_rules_mirror_about_zero(ci, delta) -> None:
    lo, hi = ci
    assert verdict_from_ci(lo, hi, "none", delta) == verdict_from_ci(-hi, -lo, "none", delta)


@given(intervals(), st.floats(0.01, 2))
def test_ci_inside_sesoi_band(ci, delta) -> None:
    lo, hi = ci
    if -delta < lo and hi < delta:
        assert verdict_from_ci(lo, hi, "positive", delta) is F
        assert verdict_from_ci(lo, hi, "negative", delta) is F
        assert verdict_from_ci(lo, hi, "none", delta) is S


@given(intervals(), st.floats(0.01, 2))
def test_clear_effect_supports_its_direction_only(ci, delta) -> None:
    lo, hi = ci
    if lo > delta:
        assert verdict_from_ci(lo, hi, "positive", delta) is S
        assert verdict_from_ci(lo, hi, "negative", delta) is F
        assert verdict_from_ci(lo, hi, "none", delta) is F


@settings(max_examples=300)
@given(
    st.floats(-3, 3),
    st.floats(0.01, 2),
    st.integers(1, 30),
    st.floats(0, 1.5),
    st.sampled_from(["positive", "negative", "none"]),
    st.sampled_from([0.01, 0.05, 0.1]),
)
def test_p_value_rule_equals_interval_rule(est, se, df, delta, direction, alpha) -> None:
    e = TEstimate(est, se, df)
    lo, hi = e.ci(1 - 2 * alpha)
    by_ci = verdict_from_ci(lo, hi, direction, delta)
    by_p = verdict_from_p(*p_values(e, direction, delta), alpha)
    # Exactly one verdict, and the same from both statements of the rule (away from ties).
    margin = 1e-9 * (1 + abs(est) + se)
    if (
        min(abs(lo - b) for b in (0, delta, -delta)) > margin
        and min(abs(hi - b) for b in (0, delta, -delta)) > margin
    ):
        assert by_ci is by_p


def test_combine_rules() -> None:
    assert combine_verdicts([S, S], "all") is S
    assert combine_verdicts([S, F], "all") is F
    assert combine_verdicts([S, INC], "all") is INC
    assert combine_verdicts([S, F], "any") is S
    assert combine_verdicts([F, F], "any") is F
    assert combine_verdicts([F, INC], "any") is INC


def test_t_estimate_matches_scipy_ttest() -> None:
    from scipy import stats

    x = np.array([0.3, 0.1, 0.25, 0.4, 0.05])
    e = TEstimate(x.mean(), x.std(ddof=1) / np.sqrt(5), 4)
    ref = stats.ttest_1samp(x, 0.1, alternative="greater")
    assert e.p_greater(0.1) == pytest.approx(ref.pvalue, rel=1e-12)
    ref = stats.ttest_1samp(x, 0.1, alternative="less")
    assert e.p_less(0.1) == pytest.approx(ref.pvalue, rel=1e-12)
    ci = stats.ttest_1samp(x, 0.0).confidence_interval(0.9)
    assert e.ci(0.9) == pytest.approx((ci.low, ci.high), rel=1e-12)


def test_holm_adjustment_reference() -> None:
    # Holm (1979) by hand for p = (0.01, 0.04, 0.03): sorted 0.01·3, 0.03·2, max(0.04·1, 0.06)
    parts = [Part(f"p{i}", TEstimate(0, 1, 10), 11, 0, "d", "m") for i in range(3)]
    # Under `any`, p_support is the adjusted side (under `all`, p_falsify: docs/verdicts.md).
    table, _ = decide(parts, Prediction(direction="positive", sesoi=0.5, combine="any"))
    from statsmodels.stats.multitest import multipletests

    raw = table["p_support"].to_numpy()
    assert table["p_support_adj"].tolist() == pytest.approx(multipletests(raw, method="holm")[1])
    manual = np.minimum(1, np.maximum.accumulate(np.sort(raw) * np.array([3, 2, 1])))
    assert sorted(table["p_support_adj"]) == pytest.approx(manual)
    table, _ = decide(parts, Prediction(direction="positive", sesoi=0.5))
    raw = table["p_falsify"].to_numpy()
    assert table["p_falsify_adj"].tolist() == pytest.approx(multipletests(raw, method="holm")[1])


def _simulated_correlations(rng, k, n_units, rho):
    """k replicates; per replicate a correlated pair of unit measures with its own jitter."""
    rs = []
    for _ in range(k):
        rho_i = np.tanh(np.arctanh(rho) + rng.normal(0, 0.1))  # between-model spread
        cov = [[1, rho_i], [rho_i, 1]]
        xy = rng.multivariate_normal([0, 0], cov, size=n_units)
        rs.append(np.corrcoef(xy.T)[0, 1])
    return rs


@pytest.mark.parametrize("pooling", ["t", "random_effects"])
@pytest.mark.parametrize("k", [3, 5, 10])
def test_null_supported_rate_is_at_most_alpha(pooling, k) -> None:
    # True effect exactly 0; a SUPPORTED verdict for a positive claim is a false positive.
    rng = np.random.default_rng(k)
    alpha, sims = 0.05, 800
    pred = Prediction(direction="positive", sesoi=0.1, alpha=alpha)
    hits = 0
    for _ in range(sims):
        rs = _simulated_correlations(rng, k, 64, 0.0)
        est = pool_correlations(rs, [64] * k, pooling)
        hits += verdict_from_p(*p_values(est, pred.direction, pred.sesoi), alpha) is S
    rate = hits / sims
    # Monte-Carlo error: 3 binomial standard errors above α.
    assert rate <= alpha + 3 * np.sqrt(alpha * (1 - alpha) / sims)


def test_true_effect_is_supported_and_negligible_one_falsified() -> None:
    rng = np.random.default_rng(0)
    strong = pool_correlations(_simulated_correlations(rng, 10, 64, 0.5), [64] * 10, "t")
    weak = pool_correlations(_simulated_correlations(rng, 10, 64, 0.0), [64] * 10, "t")
    assert verdict_from_p(*p_values(strong, "positive", 0.1), 0.05) is S
    assert verdict_from_p(*p_values(weak, "positive", 0.3), 0.05) is F
    assert verdict_from_p(*p_values(weak, "none", 0.3), 0.05) is S


def test_hksj_against_a_hand_computation() -> None:
    # Hartung–Knapp: q = Σ w*(z−μ)² / (k−1), se = sqrt(q / Σ w*), w* = 1/(v + τ²_DL).
    rs = np.array([0.1, 0.3, -0.05, 0.2])
    n = np.array([64, 64, 32, 128])
    z, v = np.arctanh(rs), 1 / (n - 3)
    w = 1 / v
    mu_fe = (w * z).sum() / w.sum()
    q = (w * (z - mu_fe) ** 2).sum()
    tau2 = max(0.0, (q - 3) / (w.sum() - (w**2).sum() / w.sum()))
    ws = 1 / (v + tau2)
    mu = (ws * z).sum() / ws.sum()
    se = np.sqrt((ws * (z - mu) ** 2).sum() / 3 / ws.sum())
    est = pool_correlations(rs, n, "random_effects", "pearson")
    assert est.estimate == pytest.approx(mu, rel=1e-9)
    assert est.se == pytest.approx(se, rel=1e-9)
    assert est.df == 3


def test_hksj_with_equal_units_is_the_t_interval() -> None:
    # Equal within-replicate variances make the HKSJ weights equal: the t interval exactly.
    rs = [0.1, 0.3, -0.05, 0.2, 0.15]
    t = pool_correlations(rs, [64] * 5, "t")
    re = pool_correlations(rs, [64] * 5, "random_effects", "spearman")
    assert (re.estimate, re.se, re.df) == pytest.approx((t.estimate, t.se, t.df), rel=1e-9)


@pytest.mark.parametrize("direction,est,delta", [("positive", 0.05, 0.1), ("none", 0.02, 0.1)])
def test_replicates_needed_reaches_the_power_it_promises(direction, est, delta) -> None:
    # Independent check with scipy's noncentral t: with n replicates the one-sided test at α of
    # the distance to a decision has power ≥ 0.8, and with n − 1 it does not.
    from scipy import stats

    from falsify.stats.power import replicates_needed

    k, sd = 5, 0.15
    e = TEstimate(est, sd / np.sqrt(k), k - 1)
    n = replicates_needed(e, k, direction, delta, 0.05)
    distance = max(est, delta - est) if direction == "positive" else abs(delta - abs(est))

    def power(m: int) -> float:
        crit = stats.t.ppf(0.95, m - 1)
        return float(stats.nct.sf(crit, m - 1, distance / sd * np.sqrt(m)))

    assert n is not None and power(n) >= 0.8 > power(n - 1)


def _options_part() -> Part:
    return Part("a", TEstimate(0.5, 0.1, 9), 10, 0.5, "d", "t")


@pytest.mark.parametrize(
    "call, option, given",
    [
        (lambda: correlation(np.arange(5.0), np.arange(5.0) ** 2, "kendal"), "method", "kendal"),
        (lambda: fisher_z_variance(np.array([10.0]), "spearmann"), "method", "spearmann"),
        (lambda: pool_correlations([0.1, 0.2, 0.3], [20] * 3, "random"), "pooling", "random"),
        (lambda: pool_correlations([0.1, 0.2], [20] * 2, "t", "tau"), "method", "tau"),
        (lambda: verdict_from_ci(0.1, 0.2, "up", 0.1), "direction", "up"),
        (lambda: p_values(TEstimate(0.5, 0.1, 9), "up", 0.1), "direction", "up"),
        (lambda: replicates_needed(TEstimate(0.5, 0.1, 9), 10, "up", 0.1, 0.05), "direction", "up"),
        (lambda: combine_verdicts([S, F], "every"), "combine", "every"),
        (lambda: TEstimate(0.5, 0.1, 9, "log"), "scale", "log"),  # type: ignore[arg-type]
        (
            lambda: decide(
                [_options_part()],
                Prediction.model_construct(
                    direction="positive", sesoi=0.1, alpha=0.05, combine="all", adjust="fdr_bh"
                ),
            ),
            "adjust",
            "fdr_bh",
        ),
    ],
)
def test_unknown_options_are_errors(call, option, given) -> None:
    # They used to fall through: an unknown method became Kendall, an unknown pooling random
    # effects, an unknown direction 'none', an unknown combine 'any', a scale the identity.
    with pytest.raises(ValueError, match=rf"'{option}' must be one of \[.*\]\. Got '{given}'"):
        call()
