"""The lack-of-fit check of a trend contrast (falsify/stats/between.py): a grid whose outcome
is flat and then collapses is flagged; a straight line is flagged at about the nominal rate."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import statsmodels.formula.api as smf
from statsmodels.stats.anova import anova_lm

from falsify.cli.main import main
from falsify.stats.between import fit_trend, lack_of_fit

LEVELS = np.array([0.0, 0.25, 0.5, 0.75, 1.0])


def _grid(rng: np.random.Generator, means: np.ndarray, seeds: int = 5) -> pd.DataFrame:
    """One model per seed × level: a seed effect, the level's mean, model noise."""
    seed = np.repeat(np.arange(seeds), len(LEVELS))
    x = np.tile(LEVELS, seeds)
    y = rng.normal(0, 0.02, seeds)[seed] + np.tile(means, seeds) + rng.normal(0, 0.01, len(x))
    return pd.DataFrame({"seed": seed, "x": x, "y": y})


def test_f_test_matches_statsmodels_anova() -> None:
    table = _grid(np.random.default_rng(0), 0.9 - 0.1 * LEVELS)
    lof = lack_of_fit(table, 0.05)
    # anova_lm(smf.ols("y ~ x + C(seed)", table).fit(),
    #          smf.ols("y ~ C(x) + C(seed)", table).fit()): the same nested comparison
    ref = anova_lm(
        smf.ols("y ~ x + C(seed)", table).fit(), smf.ols("y ~ C(x) + C(seed)", table).fit()
    )
    assert lof.f == pytest.approx(ref["F"].iloc[1])
    assert lof.p == pytest.approx(ref["Pr(>F)"].iloc[1])
    assert (lof.df_num, lof.df_den) == (3, 16)  # C − 2 and (n − 1)(C − 1)


def test_flat_then_collapse_is_flagged() -> None:
    # accuracy steady at 0.9, then chance (0.1) at the last level: one straight slope would
    # misread it, and the report says so.
    fit = fit_trend(_grid(np.random.default_rng(1), np.array([0.9, 0.9, 0.9, 0.9, 0.1])), "ols")
    assert fit.lack_of_fit is not None and fit.lack_of_fit.flagged
    assert fit.estimates["trend"].estimate < 0
    assert any(n.startswith("Lack of fit: the outcome does not follow") for n in fit.notes)


def test_a_straight_line_is_flagged_at_about_the_nominal_rate() -> None:
    rng = np.random.default_rng(2)
    n = 400
    flagged = sum(lack_of_fit(_grid(rng, 0.9 - 0.2 * LEVELS), 0.05).flagged for _ in range(n))
    # binomial(400, 0.05): mean 20, sd 4.4; the bound is the mean + 3 sd
    assert flagged / n <= 0.05 + 3 * np.sqrt(0.05 * 0.95 / n)
    assert flagged > 0  # not a test that never fires


def test_a_seeds_own_slope_is_not_lack_of_fit() -> None:
    # Each seed its own (linear) slope: the level means stay on a line, so the check keeps
    # its level (the per-seed slopes only widen the error term).
    rng = np.random.default_rng(3)
    n, flagged = 300, 0
    for _ in range(n):
        table = _grid(rng, 0.9 - 0.2 * LEVELS)
        table["y"] += rng.normal(0, 0.05, 5)[table["seed"]] * table["x"]
        flagged += lack_of_fit(table, 0.05).flagged
    assert flagged / n <= 0.05 + 3 * np.sqrt(0.05 * 0.95 / n)


def test_two_levels_have_no_lack_of_fit() -> None:
    table = _grid(np.random.default_rng(4), 0.9 - 0.1 * LEVELS)
    assert lack_of_fit(table[table["x"].isin([0.0, 1.0])], 0.05) is None


TREND = """\
id: trend_tiny
claim: More randomized labels lower training-label accuracy (a fast test population).
population:
  data: {kind: digits}
  model: {kind: mlp, hidden: [8]}
  training: {epochs: 2, batch_size: 128, lr: 0.01}
  seeds: 3
  conditions:
    training.label_noise: [0, 0.25, 0.5]
test:
  kind: between_conditions
  outcome: {kind: accuracy, split: train}
  compare: {kind: trend, factor: training.label_noise}
prediction:
  direction: negative
  sesoi: 0.02
"""


def test_trend_report_has_the_lack_of_fit_note_and_hedges_g(write, tmp_path) -> None:
    out, cache = tmp_path / "reports", tmp_path / "cache"
    args = ["run", str(write(TREND)), "--out", str(out), "--cache", str(cache), "--quiet"]
    assert main(args) in (0, 1)
    report = (out / "trend_tiny.md").read_text()
    assert "Lack of fit: " in report and "F(1, 4) = " in report
    assert "| Hedges' g |" in report
    parts = pd.read_csv(out / "trend_tiny.parts.csv")
    # g_z = d_z · J(2), J(2) = 0.5641895835477563 (scipy.special.gamma(1) /
    # (np.sqrt(1) * scipy.special.gamma(0.5)))
    assert parts["hedges_g"].iloc[0] == pytest.approx(
        parts["effect_size"].iloc[0] * 0.5641895835477563
    )
