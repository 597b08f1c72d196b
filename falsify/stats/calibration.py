"""Calibration: the verdict rules run on simulated replicates whose truth is known.

For every test shape, a simulator draws k replicates with a known true effect θ (in the claim's
units) and returns the pooled estimate the product would compute; the product's own verdict
functions then decide. Over many simulations this gives, per shape, method and k:

- the rate of SUPPORTED under a true null (θ = 0): the false-support rate, which must be at
  most α up to Monte-Carlo error;
- the rate of FALSIFIED when θ equals the SESOI (at the boundary): at most α as well;
- power: the rate of SUPPORTED at θ = 2δ and 3δ.

Each ``prediction.method`` has its rows: the t reference of each shape, and the BCa bootstrap
and sign-flip test (:mod:`falsify.stats.resampling`) of the same per-replicate values. Rows at a
replicate count the product refuses for a method are shown, marked not offered.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd
from scipy import stats
from statsmodels.stats.meta_analysis import combine_effects

from falsify.stats.association import fisher_z, pool_correlations
from falsify.stats.between import fit_contrasts, fit_trend
from falsify.stats.estimate import Scale, TEstimate
from falsify.stats.paired import paired_t
from falsify.stats.resampling import min_replicates, resample
from falsify.stats.verdict import Verdict, p_values, verdict_from_p

__all__ = ["SIMULATORS", "Simulator", "calibrate"]

# rng, number of replicates k, true effect θ -> the pooled estimate of one simulated study
Simulate = Callable[[np.random.Generator, int, float], TEstimate]
# rng, k, θ -> the k per-replicate values on the test scale (what the resampling methods use)
Values = Callable[[np.random.Generator, int, float], np.ndarray]


@dataclass(frozen=True)
class Simulator:
    shape: str
    method: str
    sesoi: float
    model: str  # the data-generating model, in words, for the calibration report
    simulate: Simulate
    offered: bool = True  # False: shown only as a comparison, not selectable in a file
    stress: bool = False  # True: data outside the method's assumptions, shown, not required
    # True: a method whose error rates are only near α (the BCa bootstrap): shown, not
    # required to be within α + 3 Monte-Carlo SE
    approximate: bool = False
    # The prediction.method it calibrates; the product refuses a method below its
    # min_replicates, and rows below that are shown (they say why) but marked not offered.
    prediction_method: str = "t"


_N_UNITS = 64
_TAU = 0.15  # between-model spread of the true Fisher z


def _replicate_correlations(rng: np.random.Generator, k: int, theta: float) -> np.ndarray:
    """k per-replicate Spearman r over 64 bivariate-normal units, true z spread τ = 0.15.

    The replicate's true *Spearman* correlation ρ_s is drawn around θ; the normal pair is
    generated with the Pearson ρ = 2·sin(π·ρ_s / 6) that has that Spearman correlation
    (Pearson 1907; Kruskal 1958), so θ is the estimand of the product's default test.
    """
    rho_s = np.tanh(np.arctanh(theta) + rng.normal(0.0, _TAU, size=k))
    rho = 2 * np.sin(np.pi * rho_s / 6)
    x = rng.standard_normal((k, _N_UNITS))
    e = rng.standard_normal((k, _N_UNITS))
    y = rho[:, None] * x + np.sqrt(1 - rho[:, None] ** 2) * e
    rx, ry = stats.rankdata(x, axis=1), stats.rankdata(y, axis=1)
    rx -= rx.mean(axis=1, keepdims=True)
    ry -= ry.mean(axis=1, keepdims=True)
    return (rx * ry).sum(1) / np.sqrt((rx**2).sum(1) * (ry**2).sum(1))


def _association(pooling: str) -> Simulate:
    def simulate(rng: np.random.Generator, k: int, theta: float) -> TEstimate:
        return pool_correlations(_replicate_correlations(rng, k, theta), [_N_UNITS] * k, pooling)

    return simulate


def _dersimonian_laird_normal(rng: np.random.Generator, k: int, theta: float) -> TEstimate:
    """The textbook random-effects CI (DL τ², normal reference), for comparison only."""
    z = np.arctanh(_replicate_correlations(rng, k, theta))
    res = combine_effects(z, np.full(k, 1 / (_N_UNITS - 3)), method_re="dl")
    return TEstimate(float(res.mean_effect_re), float(res.sd_eff_w_re), np.inf, "fisher_z")


_SIGMA_MODEL = 0.02  # between-model sd of the true targeted − control difference
_SIGMA_DRAW = 0.03  # sd of one random group's effect within a model
_DRAWS = 50


def _targeted_differences(skewed: bool) -> Values:
    def values(rng: np.random.Generator, k: int, theta: float) -> np.ndarray:
        # A model's own true difference: normal, or right-skewed (centred exponential).
        spread = rng.exponential(1.0, size=k) - 1.0 if skewed else rng.standard_normal(k)
        own = theta + _SIGMA_MODEL * spread
        control_noise = rng.normal(0.0, _SIGMA_DRAW, size=(k, _DRAWS)).mean(axis=1)
        return own - control_noise

    return values


def _targeted(skewed: bool) -> Simulate:
    values = _targeted_differences(skewed)

    def simulate(rng: np.random.Generator, k: int, theta: float) -> TEstimate:
        return paired_t(values(rng, k, theta))

    return simulate


def _resampled(values: Values, method: str, scale: Scale = "identity") -> Simulate:
    """The per-replicate ``values`` of a shape, decided by a resampling ``method``."""

    def simulate(rng: np.random.Generator, k: int, theta: float) -> TEstimate:
        return resample(values(rng, k, theta), method, scale)

    return simulate


def _association_z(rng: np.random.Generator, k: int, theta: float) -> np.ndarray:
    return fisher_z(_replicate_correlations(rng, k, theta))


def _contrast_differences(rng: np.random.Generator, k: int, theta: float) -> np.ndarray:
    conditions = [str(i) for i in range(_N_CONDITIONS)]
    fit = fit_contrasts(_grid(rng, k, theta, False), "0", conditions, "ols")
    return fit.values[conditions[-1]]


def _trend_slopes(rng: np.random.Generator, k: int, theta: float) -> np.ndarray:
    return fit_trend(_grid(rng, k, theta, True), "ols", None).values["trend"]


def _targeted_model(skewed: bool) -> str:
    spread = "a centred Exp(1) draw" if skewed else "N(0, 1)"
    return (
        f"per replicate, d = θ + {_SIGMA_MODEL}·({spread}) − the mean of {_DRAWS} random-group "
        f"effects with sd {_SIGMA_DRAW}; one-sample t over replicates"
    )


_N_CONDITIONS = 4  # a reference and three treated conditions, as in the bundled grids
_SIGMA_SEED = 0.01  # shared seed effect (what pairing by seed removes)
_SIGMA_MODEL_OUTCOME = 0.006  # each trained model's own deviation


def _grid(rng: np.random.Generator, k: int, theta: float, trend: bool) -> pd.DataFrame:
    """One simulated grid: condition c = 0..3 at seeds 0..k−1, outcome y.

    Contrast: the last condition differs from the reference (c = 0) by θ, the middle ones by
    θ/2. Trend: y rises by θ per unit of x = c, with a per-seed slope jitter of θ/4 + 0.002.
    """
    c = np.repeat(np.arange(_N_CONDITIONS), k)
    seed = np.tile(np.arange(k), _N_CONDITIONS)
    u = rng.normal(0.0, _SIGMA_SEED, size=k)[seed]
    e = rng.normal(0.0, _SIGMA_MODEL_OUTCOME, size=len(c))
    if trend:
        slope = theta + rng.normal(0.0, abs(theta) / 4 + 0.002, size=k)[seed]
        y = u + slope * c + e
    else:
        shift = np.where(c == _N_CONDITIONS - 1, theta, np.where(c == 0, 0.0, theta / 2))
        y = u + shift + e
    return pd.DataFrame({"condition": c.astype(str), "seed": seed, "x": c.astype(float), "y": y})


def _contrast(model: str) -> Simulate:
    def simulate(rng: np.random.Generator, k: int, theta: float) -> TEstimate:
        conditions = [str(i) for i in range(_N_CONDITIONS)]
        fit = fit_contrasts(_grid(rng, k, theta, False), "0", conditions, model)
        return fit.estimates[conditions[-1]]

    return simulate


def _trend(model: str) -> Simulate:
    def simulate(rng: np.random.Generator, k: int, theta: float) -> TEstimate:
        return fit_trend(_grid(rng, k, theta, True), model, None).estimates["trend"]

    return simulate


_GRID_MODEL = (
    f"{_N_CONDITIONS} conditions × k seeds; y = seed effect N(0, {_SIGMA_SEED}²) + condition "
    f"effect + N(0, {_SIGMA_MODEL_OUTCOME}²) per model; contrast of the last condition (θ) "
    "against the reference, or slope θ per grid step with per-seed slope jitter"
)

_ASSOC_MODEL = (
    f"per replicate, {_N_UNITS} units with bivariate-normal (x, y); the replicate's true "
    f"Spearman correlation is tanh(atanh(θ) + N(0, {_TAU}²)); Spearman r per replicate"
)

# prediction.method -> how the calibration table names it
_RESAMPLING = {"bootstrap": "BCa bootstrap", "permutation": "sign-flip test"}

SIMULATORS: list[Simulator] = [
    Simulator("association", "t interval of Fisher z", 0.1, _ASSOC_MODEL, _association("t")),
    Simulator(
        "association",
        "random effects, HKSJ",
        0.1,
        _ASSOC_MODEL,
        _association("random_effects"),
    ),
    Simulator(
        "targeted-vs-control",
        "paired t (normal model noise)",
        0.01,
        _targeted_model(False),
        _targeted(False),
    ),
    Simulator(
        "targeted-vs-control",
        "paired t (skewed model noise, stress)",
        0.01,
        _targeted_model(True),
        _targeted(True),
        stress=True,
    ),
    Simulator(
        "between-conditions",
        "contrast: OLS, seed fixed effects, HC2",
        0.01,
        _GRID_MODEL,
        _contrast("ols"),
    ),
    Simulator(
        "between-conditions",
        "contrast: MixedLM, seed random intercept",
        0.01,
        _GRID_MODEL,
        _contrast("mixed"),
    ),
    Simulator(
        "between-conditions",
        "trend: OLS, seed fixed effects, clustered SE",
        0.01,
        _GRID_MODEL,
        _trend("ols"),
    ),
    *(
        Simulator(
            shape,
            f"{what}: {_RESAMPLING[method]}",
            sesoi,
            model,
            _resampled(values, method, scale),
            stress=stress,
            prediction_method=method,
            approximate=method == "bootstrap",
        )
        for method in _RESAMPLING
        for shape, what, sesoi, model, values, scale, stress in (
            ("association", "Fisher z", 0.1, _ASSOC_MODEL, _association_z, "fisher_z", False),
            (
                "targeted-vs-control",
                "differences (normal model noise)",
                0.01,
                _targeted_model(False),
                _targeted_differences(False),
                "identity",
                False,
            ),
            (
                "targeted-vs-control",
                "differences (skewed model noise, stress)",
                0.01,
                _targeted_model(True),
                _targeted_differences(True),
                "identity",
                True,
            ),
            (
                "between-conditions",
                "contrast: per-seed differences",
                0.01,
                _GRID_MODEL,
                _contrast_differences,
                "identity",
                False,
            ),
            (
                "between-conditions",
                "trend: per-seed slopes",
                0.01,
                _GRID_MODEL,
                _trend_slopes,
                "identity",
                False,
            ),
        )
    ),
    Simulator(
        "association",
        "random effects, DL + normal (not offered)",
        0.1,
        _ASSOC_MODEL,
        _dersimonian_laird_normal,
        offered=False,
    ),
]


def _rates(
    sim: Simulator, rng: np.random.Generator, k: int, theta: float, n: int, alpha: float
) -> dict[str, float]:
    counts = dict.fromkeys(Verdict, 0)
    for _ in range(n):
        est = sim.simulate(rng, k, theta)
        counts[verdict_from_p(*p_values(est, "positive", sim.sesoi), alpha)] += 1
    return {v.value: c / n for v, c in counts.items()}


def calibrate(
    simulators: Sequence[Simulator] = SIMULATORS,
    replicates: Sequence[int] = (3, 5, 10, 20),
    n_sims: int = 1000,
    alpha: float = 0.05,
    power_at: Sequence[float] = (1.5, 2.0, 3.0),
    seed: int = 0,
) -> pd.DataFrame:
    """One row per shape × method × k: error rates at θ = 0 and θ = δ, power at θ = m·δ.

    All claims are simulated as ``positive`` with the simulator's SESOI δ; the other directions
    are mirror images under the verdict rules (a property the test suite checks).
    """
    rows = []
    mc_se = float(np.sqrt(alpha * (1 - alpha) / n_sims))
    for i, sim in enumerate(simulators):
        for k in replicates:
            rng = np.random.default_rng([seed, i, k])
            null = _rates(sim, rng, k, 0.0, n_sims, alpha)
            edge = _rates(sim, rng, k, sim.sesoi, n_sims, alpha)
            row = {
                "shape": sim.shape,
                "method": sim.method,
                "offered": sim.offered and k >= min_replicates(sim.prediction_method, alpha),
                "stress": sim.stress,
                "approximate": sim.approximate,
                "replicates": k,
                "supported_under_null": null["SUPPORTED"],
                "falsified_at_sesoi": edge["FALSIFIED"],
            }
            for m in power_at:
                row[f"power_at_{m:g}_sesoi"] = _rates(sim, rng, k, m * sim.sesoi, n_sims, alpha)[
                    "SUPPORTED"
                ]
            row["calibrated"] = bool(
                row["supported_under_null"] <= alpha + 3 * mc_se
                and row["falsified_at_sesoi"] <= alpha + 3 * mc_se
            )
            rows.append(row)
    table = pd.DataFrame(rows)
    table.attrs.update(alpha=alpha, n_sims=n_sims, mc_se=mc_se)
    return table
