"""Hedges' g beside d_z (falsify/stats/paired.py; docs/verdicts.md, "Effect sizes")."""

from __future__ import annotations

import numpy as np
import pytest

from falsify.hypothesis.schema import Prediction
from falsify.stats import Part, TEstimate, decide
from falsify.stats.paired import cohens_dz, hedges_g, hedges_j


@pytest.mark.parametrize(
    "df,reference",
    [
        # scipy.special.gamma(df / 2) / (np.sqrt(df / 2) * scipy.special.gamma((df - 1) / 2))
        (2, 0.5641895835477563),
        (4, 0.7978845608028653),
        (9, 0.9138748917925523),
        (19, 0.9599103529242536),
    ],
)
def test_exact_correction_matches_the_gamma_formula(df, reference) -> None:
    assert hedges_j(df) == pytest.approx(reference, rel=1e-13)


def test_correction_approaches_hedges_approximation() -> None:
    # Hedges 1981, eq. 6e's approximation J ≈ 1 − 3 / (4·df − 1), close for moderate df and
    # computed without overflow for large df (the log-gamma form).
    for df, tol in ((9, 5e-4), (49, 2e-5), (10_000, 1e-9)):
        assert hedges_j(df) == pytest.approx(1 - 3 / (4 * df - 1), abs=tol)
    assert np.isnan(hedges_j(1))


def test_g_z_of_paired_differences() -> None:
    d = np.array([0.02, 0.03, 0.015, 0.04, 0.025])
    dz = cohens_dz(d)
    # d_z = mean / sd = 0.026 / 0.009617692030835673 (np.std(d, ddof=1))
    assert dz == pytest.approx(0.026 / 0.009617692030835673)
    # g_z = d_z · J(4), J(4) = 0.7978845608028653 (the gamma formula above)
    assert hedges_g(dz, 5) == pytest.approx(dz * 0.7978845608028653)


def _part(standardized: bool) -> Part:
    return Part(
        name="p",
        estimate=TEstimate(0.026, 0.0043, 4),
        n_replicates=5,
        effect_size=2.7,
        effect_size_kind="Cohen's d_z" if standardized else "spearman r",
        method="m",
        standardized=standardized,
    )


def test_parts_table_gives_g_beside_standardized_effects_only() -> None:
    table, _ = decide([_part(True), _part(False)], Prediction(direction="positive", sesoi=0.01))
    assert table["hedges_g"].iloc[0] == pytest.approx(2.7 * 0.7978845608028653)
    assert np.isnan(table["hedges_g"].iloc[1])  # a correlation has no Hedges' g
