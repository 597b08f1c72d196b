from __future__ import annotations

import numpy as np
import pytest

from falsify.cli.main import main
from falsify.report.calibration import format_table
from falsify.stats.calibration import SIMULATORS, calibrate
from falsify.stats.resampling import min_replicates

ALPHA = 0.05
N_SIMS = 500  # a null rate of 2α (0.10) exceeds the bound below with probability ≈ 0.94
BOUND = ALPHA + 3 * np.sqrt(ALPHA * (1 - ALPHA) / N_SIMS)


FAST = [
    s
    for s in SIMULATORS
    if s.offered and not s.stress and not s.approximate and "MixedLM" not in s.method
]


@pytest.mark.parametrize("sim", FAST, ids=lambda s: s.method)
def test_offered_methods_keep_false_support_at_alpha(sim) -> None:
    # The fewest replicates each method is offered for (the BCa bootstrap: 20) and the next.
    low = max(3, min_replicates(sim.prediction_method, ALPHA))
    table = calibrate([sim], replicates=(low, low + 2), n_sims=N_SIMS, alpha=ALPHA, power_at=())
    assert table["offered"].all()
    assert (table["supported_under_null"] <= BOUND).all(), table
    assert (table["falsified_at_sesoi"] <= BOUND).all(), table


BOOTSTRAP = [s for s in SIMULATORS if s.prediction_method == "bootstrap" and not s.stress]


@pytest.mark.parametrize("sim", BOOTSTRAP[:2], ids=lambda s: s.method)
def test_bootstrap_is_near_alpha_where_offered(sim) -> None:
    # The BCa bootstrap is approximate: at the 30 replicates it needs, its error rates are
    # about 0.05–0.06 (docs/verdicts.md); this only catches a gross error (e.g. a p-value that
    # does not invert the interval), so the bound is 2α.
    table = calibrate([sim], replicates=(30,), n_sims=300, alpha=ALPHA, power_at=())
    assert table["offered"].all() and table["approximate"].all()
    assert (table[["supported_under_null", "falsified_at_sesoi"]] <= 2 * ALPHA).all().all()


def test_every_method_has_rows_for_every_shape() -> None:
    methods = {(s.shape, s.prediction_method) for s in FAST + BOOTSTRAP}
    shapes = {"association", "targeted-vs-control", "between-conditions"}
    assert methods == {(sh, m) for sh in shapes for m in ("t", "bootstrap", "permutation")}
    assert {s.method for s in FAST + BOOTSTRAP if s.shape == "between-conditions"} >= {
        "trend: per-seed slopes: BCa bootstrap",
        "trend: per-seed slopes: sign-flip test",
    }


def test_rows_below_a_methods_minimum_are_shown_as_not_offered() -> None:
    [boot] = [s for s in BOOTSTRAP if "targeted" in s.shape]
    table = calibrate([boot], replicates=(5,), n_sims=200, alpha=ALPHA, power_at=())
    assert not table["offered"].iloc[0]
    # the reason it is refused: at 5 replicates the BCa interval is too narrow
    assert table["falsified_at_sesoi"].iloc[0] > ALPHA
    assert "BCa bootstrap (not offered)" in format_table(table)


def test_every_shape_is_calibrated() -> None:
    assert {s.shape for s in FAST} == {"association", "targeted-vs-control", "between-conditions"}


def test_mixed_model_contrast_keeps_false_support_at_alpha() -> None:
    # MixedLM fits are slow: fewer simulations, so this bound only catches gross errors.
    [mixed] = [s for s in SIMULATORS if "MixedLM" in s.method]
    n = 150
    table = calibrate([mixed], replicates=(5,), n_sims=n, alpha=ALPHA, power_at=())
    bound = ALPHA + 3 * np.sqrt(ALPHA * (1 - ALPHA) / n)
    assert table["supported_under_null"].iloc[0] <= bound
    assert table["falsified_at_sesoi"].iloc[0] <= bound


def test_calibration_detects_an_anticonservative_method() -> None:
    # DerSimonian–Laird with a normal reference is the textbook method the product does not
    # offer; at 3 replicates its false-support rate is well above α, and calibrate must show it.
    [dl] = [s for s in SIMULATORS if not s.offered]
    table = calibrate([dl], replicates=(3,), n_sims=N_SIMS, alpha=ALPHA, power_at=())
    assert table["supported_under_null"].iloc[0] > BOUND
    assert not table["calibrated"].iloc[0]


def test_calibration_shows_the_skewed_stress_case() -> None:
    # Strong right skew in the per-replicate differences makes the paired t too quick to
    # falsify at the SESOI; the calibration report must show that rather than hide it.
    [skewed] = [s for s in SIMULATORS if s.stress and s.prediction_method == "t"]
    table = calibrate([skewed], replicates=(5,), n_sims=N_SIMS, alpha=ALPHA, power_at=())
    assert table["falsified_at_sesoi"].iloc[0] > BOUND


def test_power_grows_with_replicates_and_effect() -> None:
    table = calibrate(SIMULATORS[:1], replicates=(3, 20), n_sims=200, power_at=(1.5, 3.0))
    small, large = table.iloc[0], table.iloc[1]
    assert large["power_at_3_sesoi"] > small["power_at_3_sesoi"]
    assert large["power_at_3_sesoi"] > large["power_at_1.5_sesoi"] > large["supported_under_null"]


def test_cli_writes_report(tmp_path, capsys) -> None:
    code = main(["calibrate", "--sims", "40", "--replicates", "3", "--out", str(tmp_path)])
    assert code in (0, 1)  # 40 simulations are too few to promise calibration either way
    assert "| association | t interval of Fisher z | 3 |" in capsys.readouterr().out
    text = (tmp_path / "calibration.md").read_text()
    assert "power at mδ" in text
    # the multi-part power gain: the matched rule beside the former one, on the same studies
    assert (
        "| all | both adjusted (former) | 3 |" in text
        and "| all | matched to combine | 3 |" in text
    )
    assert "sign-flip test" in text and "BCa bootstrap (not offered)" in text
    assert (tmp_path / "calibration.png").stat().st_size > 1000
    assert main(["calibrate", "--sims", "2"]) == 2
