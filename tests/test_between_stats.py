from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from scipy import stats

from falsify.hypothesis.schema import Prediction
from falsify.stats import Part, decide
from falsify.stats.between import fit_contrasts, fit_trend


def _grid(rng: np.random.Generator, n: int, effects: dict[str, float], sd: float = 1.0):
    seed_effect = rng.normal(0, 1, n)
    rows = [
        (c, s, seed_effect[s] + eff + rng.normal(0, sd))
        for c, eff in effects.items()
        for s in range(n)
    ]
    return pd.DataFrame(rows, columns=["condition", "seed", "y"])


def test_ols_contrast_is_the_paired_t_test() -> None:
    table = _grid(np.random.default_rng(3), 6, {"ref": 0.0, "a": 0.4, "b": -1.0})
    fit = fit_contrasts(table, "ref", ["ref", "a", "b"], "ols")
    assert "OLS" in fit.method and set(fit.estimates) == {"a", "b"}
    for c in ("a", "b"):
        y_c = table[table.condition == c].sort_values("seed")["y"].to_numpy()
        y_r = table[table.condition == "ref"].sort_values("seed")["y"].to_numpy()
        ref = stats.ttest_rel(y_c, y_r)  # scipy: the paired t-test
        est = fit.estimates[c]
        assert est.estimate == pytest.approx(np.mean(y_c - y_r))
        assert est.df == 5
        assert est.estimate / est.se == pytest.approx(ref.statistic)
        assert 2 * min(est.p_greater(0), est.p_less(0)) == pytest.approx(ref.pvalue)
        d = y_c - y_r
        assert fit.effect_sizes[c] == pytest.approx(d.mean() / d.std(ddof=1))


def test_mixed_contrast_matches_the_randomized_block_anova() -> None:
    table = _grid(np.random.default_rng(5), 8, {"ref": 0.0, "a": 0.5, "b": 1.0}, sd=0.5)
    fit = fit_contrasts(table, "ref", ["ref", "a", "b"], "mixed")
    assert fit.method.startswith("MixedLM")
    # Hand derivation: two-way (seed × condition) ANOVA without interaction; the contrast's
    # SE is sqrt(2 · MS_error / n) with (n − 1)(C − 1) df (balanced design, REML = ANOVA when
    # the seed variance estimate is positive).
    wide = table.pivot(index="seed", columns="condition", values="y")
    resid = (
        wide.sub(wide.mean(axis=1), axis=0).sub(wide.mean(axis=0), axis=1) + wide.to_numpy().mean()
    )
    n, c = wide.shape
    ms_error = float((resid.to_numpy() ** 2).sum()) / ((n - 1) * (c - 1))
    est = fit.estimates["b"]
    assert est.estimate == pytest.approx(float((wide["b"] - wide["ref"]).mean()), abs=1e-6)
    assert est.se == pytest.approx(np.sqrt(2 * ms_error / n), rel=1e-3)
    assert est.df == (n - 1) * (c - 1)


def test_mixed_falls_back_to_ols_with_two_seeds() -> None:
    table = _grid(np.random.default_rng(0), 2, {"ref": 0.0, "a": 1.0})
    fit = fit_contrasts(table, "ref", ["ref", "a"], "mixed")
    assert fit.method.startswith("OLS") and "OLS ran instead" in fit.notes[0]


def test_trend_is_the_within_seed_slope() -> None:
    rng = np.random.default_rng(1)
    xs = np.array([-2.0, -1.0, 0.0, 1.0])
    rows = [(s, x, 3 * s + 0.5 * x + rng.normal(0, 0.3)) for s in range(5) for x in xs]
    table = pd.DataFrame(rows, columns=["seed", "x", "y"])
    fit = fit_trend(table, "ols")
    slopes = [np.polyfit(g["x"], g["y"], 1)[0] for _, g in table.groupby("seed")]
    # Balanced x in every seed: the fixed-effects slope is the mean of per-seed slopes.
    assert fit.estimates["trend"].estimate == pytest.approx(np.mean(slopes))
    assert fit.estimates["trend"].df == 4
    mixed = fit_trend(table, "mixed")
    assert mixed.estimates["trend"].estimate == pytest.approx(np.mean(slopes), abs=0.02)


def _verdicts_and_coverage(model: str, effect: float, sims: int, seed: int):
    rng = np.random.default_rng(seed)
    pred = Prediction(direction="positive", sesoi=0.2, alpha=0.05)
    covered = supported = 0
    for _ in range(sims):
        # Unequal spread across conditions, as regularized conditions often have.
        table = _grid(rng, 6, {"ref": 0.0, "a": effect}, sd=1.0)
        table.loc[table.condition == "a", "y"] += rng.normal(0, 0.5, 6)
        fit = fit_contrasts(table, "ref", ["ref", "a"], model)
        est = fit.estimates["a"]
        lo, hi = est.ci(0.9)
        covered += lo <= effect <= hi
        part = Part("a", est, 6, 0.0, "d_z", fit.method)
        supported += decide([part], pred)[1].value == "SUPPORTED"
    return covered / sims, supported / sims


@pytest.mark.parametrize("model,sims", [("ols", 300), ("mixed", 100)])
def test_known_difference_is_covered_and_null_is_rarely_supported(model, sims) -> None:
    coverage, _ = _verdicts_and_coverage(model, effect=0.8, sims=sims, seed=11)
    # Nominal 90%; the binomial SE at 300 (100) simulations is 1.7 (3.0) points.
    assert 0.85 <= coverage <= 0.95
    _, false_support = _verdicts_and_coverage(model, effect=0.0, sims=sims, seed=12)
    assert false_support <= 0.05 + 3 * np.sqrt(0.05 * 0.95 / sims)


def test_trend_coverage_with_seed_specific_slopes() -> None:
    rng = np.random.default_rng(7)
    xs = np.array([0.0, 1.0, 2.0, 3.0])
    covered = 0
    sims = 200
    for _ in range(sims):
        slope = 0.3 + rng.normal(0, 0.3, 5)
        rows = [
            (s, x, rng.normal() + slope[s] * x + rng.normal(0, 0.5)) for s in range(5) for x in xs
        ]
        est = fit_trend(pd.DataFrame(rows, columns=["seed", "x", "y"]), "ols").estimates["trend"]
        lo, hi = est.ci(0.9)
        covered += lo <= 0.3 <= hi
    assert 0.85 <= covered / sims <= 0.97


def test_a_part_can_predict_the_other_direction() -> None:
    from falsify.stats.estimate import TEstimate

    pred = Prediction(direction="negative", sesoi=0.1, alpha=0.05)
    up = TEstimate(0.5, 0.05, 9)
    table, verdict = decide(
        [
            Part("rises", up, 10, 1.0, "d_z", "m", direction="positive"),
            Part("falls", TEstimate(-0.5, 0.05, 9), 10, -1.0, "d_z", "m"),
        ],
        pred,
    )
    assert table["verdict"].tolist() == ["SUPPORTED", "SUPPORTED"] and verdict.value == "SUPPORTED"
    assert table["direction"].tolist() == ["positive", "negative"]
    # Without its own direction the rising part contradicts the negative prediction.
    table, verdict = decide([Part("rises", up, 10, 1.0, "d_z", "m")], pred)
    assert verdict.value == "FALSIFIED"


@pytest.mark.parametrize("fit", ["contrasts", "trend"])
def test_unknown_model_is_an_error(fit) -> None:
    # An unknown model used to run OLS silently.
    table = _grid(np.random.default_rng(0), 4, {"ref": 0.0, "a": 0.5})
    with pytest.raises(ValueError, match=r"'model' must be one of \['ols', 'mixed'\]\. Got 'ml'"):
        if fit == "contrasts":
            fit_contrasts(table, "ref", ["ref", "a"], "ml")
        else:
            fit_trend(table.assign(x=(table["condition"] == "a").astype(float)), "ml")
