"""The adjustment across parts matches the combination rule (docs/verdicts.md)."""

from __future__ import annotations

import numpy as np
import pytest

from falsify.hypothesis.schema import Prediction
from falsify.stats.calibration_parts import RULES, calibrate_parts
from falsify.stats.decide import Part, adjustments, decide, part_verdicts
from falsify.stats.estimate import TEstimate
from falsify.stats.verdict import Verdict, combine_verdicts

SMALL = np.array([0.01, 0.04, 0.03])
# R: p.adjust(c(0.01, 0.04, 0.03), "holm")  ->  0.03 0.06 0.06
HOLM = np.array([0.03, 0.06, 0.06])
LARGE = np.array([0.5, 0.6, 0.7])
# R: p.adjust(c(0.5, 0.6, 0.7), "holm")  ->  1.0 1.0 1.0
LARGE_HOLM = np.array([1.0, 1.0, 1.0])


def test_all_leaves_support_unadjusted_and_adjusts_falsify() -> None:
    sup, fal, verdicts = part_verdicts(SMALL, LARGE, 0.05, "all", "holm")
    np.testing.assert_allclose(sup, SMALL)
    np.testing.assert_allclose(fal, LARGE_HOLM)
    # Every part supported at α: SUPPORTED, where Holm on p_support (0.06) would not be.
    assert combine_verdicts(verdicts, "all") is Verdict.SUPPORTED


def test_any_adjusts_support_and_leaves_falsify_unadjusted() -> None:
    sup, fal, verdicts = part_verdicts(LARGE, SMALL, 0.05, "any", "holm")
    np.testing.assert_allclose(sup, LARGE_HOLM)
    np.testing.assert_allclose(fal, SMALL)
    assert combine_verdicts(verdicts, "any") is Verdict.FALSIFIED
    # The side that one part decides is still adjusted: Holm on these p_support rejects none.
    sup, _, verdicts = part_verdicts(SMALL, LARGE, 0.05, "any", "holm")
    np.testing.assert_allclose(sup, HOLM)
    assert [v is Verdict.SUPPORTED for v in verdicts] == [True, False, False]


@pytest.mark.parametrize(
    ("combine", "adjust", "expected"),
    [
        ("all", "holm", ("none", "holm")),
        ("any", "bonferroni", ("bonferroni", "none")),
        ("all", "none", ("none", "none")),
    ],
)
def test_adjustments_name_each_side(combine: str, adjust: str, expected: tuple) -> None:
    assert adjustments(combine, adjust) == expected


def test_decide_reports_which_p_is_adjusted() -> None:
    # Three parts, each a one-sample t with estimate 0.05, se 0.02, df 9 (ten replicates).
    parts = [
        Part(f"layer{i}", TEstimate(0.05 + 0.005 * i, 0.02, 9.0, "identity"), 10, 0.8, "d_z", "t")
        for i in range(3)
    ]
    table, verdict = decide(parts, Prediction(direction="positive", sesoi=0.01))
    assert list(table["p_support_adjustment"]) == ["none"] * 3
    assert list(table["p_falsify_adjustment"]) == ["holm"] * 3
    np.testing.assert_allclose(table["p_support_adj"], table["p_support"])
    # scipy.stats.t.sf(0.05 / 0.02, 9) = 0.0169309
    assert table["p_support"].iloc[0] == pytest.approx(0.0169309, abs=1e-6)
    assert verdict is Verdict.SUPPORTED
    table, _ = decide(parts, Prediction(direction="positive", sesoi=0.01, combine="any"))
    assert list(table["p_support_adjustment"]) == ["holm"] * 3
    # statsmodels multipletests(holm) of the three p: the smallest is tripled.
    assert table["p_support_adj"].min() == pytest.approx(3 * table["p_support"].min())
    one, _ = decide(parts[:1], Prediction(direction="positive", sesoi=0.01, combine="any"))
    assert one["p_support_adjustment"].iloc[0] == "none"


N_SIMS = 400
ALPHA = 0.05
BOUND = ALPHA + 3 * np.sqrt(ALPHA * (1 - ALPHA) / N_SIMS)


def test_simulated_error_rates_at_alpha_and_power_gained() -> None:
    table = calibrate_parts(replicates=(5,), n_sims=N_SIMS, alpha=ALPHA, power_at=(2.0,))
    matched = table[table["rule"] == RULES[0]].set_index("combine")
    former = table[table["rule"] == RULES[1]].set_index("combine")
    for combine in ("all", "any"):
        assert matched.loc[combine, "supported_under_null"] <= BOUND, table
        assert matched.loc[combine, "falsified_at_sesoi"] <= BOUND, table
        # Same simulated studies: the unadjusted side can only decide more often, and at
        # 2δ with 5 replicates it does so visibly.
        gain = matched.loc[combine, "power_at_2_sesoi"] - former.loc[combine, "power_at_2_sesoi"]
        assert gain > 0.03, table
