"""The resampling methods of ``prediction.method`` (falsify/stats/resampling.py): reference
values from scipy, the verdict rules read the same off their CIs and p-values, and a file
that asks for a method its test cannot use is refused at the field."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from scipy import stats

from falsify.cli.main import main
from falsify.errors import HypothesisError, LocatedError
from falsify.hypothesis import load
from falsify.hypothesis.schema import Prediction
from falsify.runner import ModelCache, plan
from falsify.stats import Part, TEstimate, decide
from falsify.stats.resampling import (
    N_RESAMPLES,
    bootstrap_estimate,
    describe_method,
    resample,
    sign_flip_estimate,
)
from falsify.stats.verdict import p_values, verdict_from_ci, verdict_from_p

X = np.array([0.3, 1.2, -0.1, 0.8, 0.5])


@pytest.mark.parametrize(
    "null,upper,reference",
    [
        # stats.permutation_test((X - null,), np.mean, permutation_type="samples",
        #     vectorized=True, n_resamples=np.inf, alternative=...).pvalue
        (0.0, True, 0.0625),
        (0.2, False, 0.9375),
        (1.0, False, 0.09375),
        (-0.05, True, 0.0625),
    ],
)
def test_sign_flip_p_values_match_scipy(null, upper, reference) -> None:
    est = sign_flip_estimate(X)
    p = est.p_greater(null) if upper else est.p_less(null)
    assert p == pytest.approx(reference, abs=1e-12)


def test_sign_flip_matches_scipy_on_random_data() -> None:
    rng = np.random.default_rng(3)
    for n in (2, 4, 7, 11):
        x = rng.normal(0.3, 1.0, size=n)
        est = sign_flip_estimate(x)
        for null in rng.normal(0.3, 1.0, size=3):
            for alternative, p in (("greater", est.p_greater), ("less", est.p_less)):
                ref = stats.permutation_test(
                    (x - null,),
                    np.mean,
                    permutation_type="samples",
                    vectorized=True,
                    n_resamples=np.inf,
                    alternative=alternative,
                ).pvalue
                assert p(null) == pytest.approx(ref, abs=1e-12)


def test_sign_flip_draws_patterns_above_the_exact_limit() -> None:
    x = np.linspace(-1, 2, 16) ** 2 - 0.5
    est = sign_flip_estimate(x)
    assert not est.exact and est.n_patterns == N_RESAMPLES
    # stats.permutation_test((x,), np.mean, permutation_type="samples", vectorized=True,
    #     n_resamples=np.inf, alternative="greater").pvalue: all 2^16 patterns
    exact = 0.0362396240234375
    se = np.sqrt(exact * (1 - exact) / N_RESAMPLES)
    assert est.p_greater(0.0) == pytest.approx(exact, abs=4 * se)
    assert "9999 random sign patterns" in describe_method(est)


def test_sign_flip_ci_is_the_range_of_the_values_at_five_replicates() -> None:
    # With 5 replicates the 2^5 = 32 patterns give p_greater(θ0) = (1 + #{subsets F: mean of
    # X over F ≤ θ0}) / 32: below min(X) it is 1/32 < 0.05, at min(X) already 2/32. So the
    # 90% CI is [min X, max X] exactly.
    lo, hi = sign_flip_estimate(X).ci(0.90)
    assert lo == pytest.approx(X.min(), abs=1e-12)
    assert hi == pytest.approx(X.max(), abs=1e-12)


def test_sign_flip_cannot_decide_below_five_replicates() -> None:
    est = sign_flip_estimate(np.array([1.0, 1.1, 0.9]))
    assert est.p_greater(0.0) == 1 / 8  # the smallest exact p with 3 replicates
    assert est.ci(0.90) == (-np.inf, np.inf)


def test_bootstrap_ci_is_scipys_bca() -> None:
    rng = np.random.default_rng(0)
    x = rng.gamma(2.0, 1.0, size=40)
    est = bootstrap_estimate(x)
    assert est.interval == "BCa"
    lo, hi = est.ci(0.90)
    # stats.bootstrap((x,), np.mean, confidence_level=0.9, method="BCa",
    #     random_state=np.random.default_rng(1)): its own resamples, so equal up to their noise
    ref = stats.bootstrap(
        (x,), np.mean, confidence_level=0.9, method="BCa", random_state=np.random.default_rng(1)
    ).confidence_interval
    width = ref.high - ref.low
    assert lo == pytest.approx(ref.low, abs=0.03 * width)
    assert hi == pytest.approx(ref.high, abs=0.03 * width)
    # Right-skewed data: the BCa interval reaches further up than down.
    assert hi - x.mean() > x.mean() - lo


def test_bootstrap_acceleration_is_efrons() -> None:
    # scipy.stats._resampling._bca_interval((X,), np.mean, axis=-1, alpha=0.05,
    #     theta_hat_b=..., batch=None, xp=np)[2]: the jackknife acceleration of the mean
    assert bootstrap_estimate(X).a == pytest.approx(0.005050634770471476, rel=1e-12)


@pytest.mark.parametrize("n", [3, 5, 12, 30])
def test_bootstrap_p_values_invert_its_interval(n) -> None:
    x = np.random.default_rng(n).normal(0.5, 1.0, size=n)
    est = bootstrap_estimate(x)
    lo, hi = est.ci(0.90)
    eps = 1e-9 * (hi - lo)
    # H0 θ ≤ θ0 is rejected at α = 0.05 exactly when θ0 is below the lower bound.
    assert est.p_greater(lo) >= 0.05 - 1e-12 > est.p_greater(lo - eps)
    assert est.p_less(hi) >= 0.05 - 1e-12 > est.p_less(hi + eps)


def test_bootstrap_of_equal_values_has_no_spread() -> None:
    est = bootstrap_estimate(np.full(6, 0.2))
    assert est.ci(0.9) == (0.2, 0.2)
    assert est.p_greater(0.0) == 0.0 and est.p_less(0.0) == 1.0
    assert "no spread" in describe_method(est)


@pytest.mark.parametrize("method", ["bootstrap", "permutation"])
@pytest.mark.parametrize("direction", ["positive", "negative", "none"])
@pytest.mark.parametrize("scale", ["identity", "fisher_z"])
def test_verdict_rules_read_the_same_off_ci_and_p(method, direction, scale) -> None:
    rng = np.random.default_rng(7)
    sesoi = 0.1
    for _ in range(40):
        n = int(rng.integers(5, 16))
        values = rng.normal(rng.normal(0.0, 0.15), 0.1, size=n)
        est = resample(values, method, scale)
        lo, hi = est.ci(0.90)
        assert lo <= est.claim_estimate <= hi
        from_p = verdict_from_p(*p_values(est, direction, sesoi), 0.05)
        assert from_p is verdict_from_ci(lo, hi, direction, sesoi)


def _part(values: np.ndarray | None) -> Part:
    d = np.array([0.02, 0.03, 0.015, 0.04, 0.025, 0.035])
    return Part(
        name="layer h",
        estimate=TEstimate(float(d.mean()), float(d.std(ddof=1) / np.sqrt(6)), 5),
        n_replicates=6,
        effect_size=float(d.mean() / d.std(ddof=1)),
        effect_size_kind="Cohen's d_z",
        method="paired differences, one-sample t over replicates",
        values=None if values is None else tuple(values),
        standardized=True,
    )


def test_decide_resamples_a_part_and_says_how() -> None:
    d = np.array([0.02, 0.03, 0.015, 0.04, 0.025, 0.035])
    pred = Prediction(direction="positive", sesoi=0.01, method="permutation")
    table, verdict = decide([_part(d)], pred)
    row = table.iloc[0]
    # all six differences are positive: the only pattern as large is the observed one
    assert row["p_support"] == pytest.approx(1 / 64)
    assert str(verdict) == "SUPPORTED"
    assert "exact sign-flip test" in row["inference"]
    t_table, _ = decide([_part(d)], Prediction(direction="positive", sesoi=0.01))
    # the default is the t test, exactly as before
    assert t_table.iloc[0]["p_support"] == pytest.approx(
        stats.ttest_1samp(d, 0, alternative="greater").pvalue
    )
    assert t_table.iloc[0]["inference"] == "t over replicates, 5 df"


def test_a_part_without_values_is_refused_at_the_field() -> None:
    pred = Prediction(direction="positive", sesoi=0.01, method="bootstrap")
    with pytest.raises(LocatedError) as exc:
        decide([_part(None)], pred)
    assert exc.value.loc == ("prediction", "method")


BETWEEN = """\
id: between_resampled
claim: Randomized labels lower training-label accuracy (a fast test population).
population:
  data: {kind: digits}
  model: {kind: mlp, hidden: [8]}
  training: {epochs: 2, batch_size: 128, lr: 0.01}
  seeds: 5
  conditions:
    training.label_noise: [0, 0.5]
test:
  kind: between_conditions
  outcome: {kind: accuracy, split: train}
  compare: {kind: reference, reference: {training.label_noise: 0}}
prediction:
  direction: negative
  sesoi: 0.02
  method: permutation
"""


def test_permutation_end_to_end(write, tmp_path: Path) -> None:
    out, cache = tmp_path / "reports", tmp_path / "cache"
    args = ["run", str(write(BETWEEN)), "--out", str(out), "--cache", str(cache), "--quiet"]
    assert main(args) in (0, 1)
    (part,) = json.loads((out / "between_resampled.json").read_text())["parts"]
    report = (out / "between_resampled.md").read_text()
    assert "exact sign-flip test over replicates (all 2^5 = 32 sign patterns)" in report
    assert part["ci_low"] <= part["estimate"] <= part["ci_high"]


@pytest.mark.parametrize(
    "old,new,needle",
    [
        ("  compare:", "  model: mixed\n  compare:", "with `test.model: mixed`"),
        ("method: permutation", "method: bootstrap", "'bootstrap' needs at least 30"),
        ("seeds: 5", "seeds: 4", "smallest p-value, 2^-n, is not below α = 0.05"),
    ],
)
def test_a_method_the_test_cannot_use_is_refused_at_the_field(
    write, tmp_path, old, new, needle
) -> None:
    path = write(BETWEEN.replace(old, new))
    with pytest.raises(HypothesisError) as exc:
        plan(load(path), ModelCache(tmp_path), torch.device("cpu"), estimate=False)
    assert "'prediction.method'" in str(exc.value) and "(line " in str(exc.value)
    assert needle in str(exc.value)


def _association(tiny_yaml: str, extra: str) -> str:
    text = tiny_yaml.replace("seeds: 3", "seeds: 5").replace(
        "  y: {kind: unit_ablation, metric: loss_increase}\n",
        "  y: {kind: unit_ablation, metric: loss_increase}\n" + extra,
    )
    return text + "  method: permutation\n"


def test_association_resamples_fisher_z_end_to_end(write, tiny_yaml, tmp_path) -> None:
    out, cache = tmp_path / "reports", tmp_path / "cache"
    path = write(_association(tiny_yaml, ""))
    assert main(["run", str(path), "--out", str(out), "--cache", str(cache), "--quiet"]) in (0, 1)
    (part,) = json.loads((out / "tiny.json").read_text())["parts"]
    rs = pd.read_csv(out / "tiny.parts.csv")
    assert rs["inference"].iloc[0].startswith("exact sign-flip test")
    # The estimate is the mean Fisher z of the per-replicate r, shown as r.
    per_rep = pd.read_csv(out / "tiny.csv").groupby("seed")[["x", "y"]]
    r = per_rep.apply(lambda g: stats.spearmanr(g["x"], g["y"]).statistic)
    assert part["estimate"] == pytest.approx(np.tanh(np.arctanh(r).mean()))
    assert -1 <= part["ci_low"] <= part["estimate"] <= part["ci_high"] <= 1


def test_random_effects_pooling_refuses_a_resampling_method(write, tiny_yaml, tmp_path) -> None:
    path = write(_association(tiny_yaml, "  pooling: random_effects\n"))
    with pytest.raises(HypothesisError, match=r"'prediction\.method'.*random_effects"):
        plan(load(path), ModelCache(tmp_path), torch.device("cpu"), estimate=False)
