"""Resampling alternatives to the t reference: a bootstrap and an exact sign-flip test over
replicates (``prediction.method``; docs/methods.md, "Inference over replicates").

Every shape that offers them reduces its replicates to one value per replicate on the test
scale (a paired difference, a Fisher-z correlation, a per-seed slope), whose mean is the
pooled estimate. Both methods give what the verdict rules of :mod:`falsify.stats.verdict` need
from a :class:`TEstimate`: one-sided p-values against any null value (0, ±δ) and the
(1 − 2α) CI, consistent with each other, so SESOI, minimum-effect and equivalence tests read
the same way as under ``t``.

- ``bootstrap``: the BCa interval of the mean (Efron 1987, JASA 82:171) from
  ``scipy.stats.bootstrap(method="BCa")``; the one-sided p-value against θ0 is the level at
  which the BCa bound equals θ0 (the interval inverted, Efron & Tibshirani 1993, §14.3 and
  §15.4). Where BCa is undefined (the bias correction or acceleration is not finite) the
  percentile interval and its inversion are used, and the method's text says so.
- ``permutation``: the sign-flip test of H0 "the values minus θ0 are symmetric about 0", the
  p-value of ``scipy.stats.permutation_test(permutation_type="samples")`` on the one sample
  (the tests compare the two; the sign patterns are drawn once per estimate, because the
  verdict rules and the CI ask for the p-value at many θ0), exact over all 2ⁿ sign patterns
  when 2ⁿ ≤ 10 000 (n ≤ 13) and with 9 999 random sign patterns above;
  the CI is the set of θ0 neither one-sided test rejects (found by bisection; the p-value is a
  step function of θ0). With n replicates the smallest exact p is 2⁻ⁿ, so at α = 0.05 no
  verdict can be reached below 5 replicates; the calibration shows it (power 0 at k = 3).

The BCa bootstrap's error rates exceed α with few replicates (its interval is too narrow by
about √((n − 1)/n) and uses normal quantiles): in ``falsify calibrate`` 0.076 at 10
replicates, 0.063 at 20 (0.080 for the trend's per-seed slopes), 0.049–0.060 at 30
(α = 0.05). It is refused below
:data:`MIN_BOOTSTRAP` = 30 replicates, and the sign-flip test below the count at which it could
reach a verdict at all (:func:`min_replicates`), each with a located error on
``prediction.method``.

``se`` and ``df`` of both are the t ones (SD/√n, n − 1); they are used only to plan how many
replicates a conclusive run would need (:mod:`falsify.stats.power`, which plans for the method).
"""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass
from types import SimpleNamespace
from typing import get_args

import numpy as np
from scipy import special, stats

from falsify.errors import LocatedError
from falsify.stats._options import check_option
from falsify.stats.estimate import Scale, TEstimate

__all__ = [
    "EXACT_MAX",
    "METHODS",
    "MIN_BOOTSTRAP",
    "BootstrapEstimate",
    "SignFlipEstimate",
    "bootstrap_estimate",
    "check_method",
    "describe_method",
    "min_replicates",
    "resample",
    "sign_flip_estimate",
]

METHODS = ("t", "bootstrap", "permutation")
N_RESAMPLES = 9_999
EXACT_MAX = 10_000  # enumerate every sign pattern when there are at most this many
_SEED = 0  # resampling is seeded: the same replicates give the same verdict
MIN_BOOTSTRAP = 30


def min_replicates(method: str, alpha: float) -> int:
    """The fewest replicates ``method`` is offered for at level ``alpha``.

    ``permutation``: the smallest exact p is 2⁻ⁿ, so n must exceed log2(1/α) for any verdict.
    """
    check_option("method", method, METHODS)
    if method == "bootstrap":
        return MIN_BOOTSTRAP
    if method == "permutation":
        return math.floor(math.log2(1 / alpha)) + 1
    return 2


def check_method(method: str, alpha: float, n: int, what: str) -> None:
    """A located error on ``prediction.method`` when ``n`` replicates are too few for it."""
    need = min_replicates(method, alpha)
    if n >= need:
        return
    why = (
        "its false-SUPPORTED and false-FALSIFIED rates exceed α below that; docs/methods.md"
        if method == "bootstrap"
        else f"with fewer, its smallest p-value, 2^-n, is not below α = {alpha:g}"
    )
    raise LocatedError(
        ("prediction", "method"),
        f"'t' for {what} with {n} replicates ({method!r} needs at least {need}: {why})",
        method,
    )


@dataclass(frozen=True)
class BootstrapEstimate(TEstimate):
    """The mean of ``values`` with BCa (or percentile) CIs and the p-values that invert them.

    ``boot``: the sorted bootstrap means; ``z0``: bias correction; ``a``: acceleration (both
    0 for the percentile method); all on the test scale.
    """

    values: tuple[float, ...] = ()
    boot: tuple[float, ...] = ()
    z0: float = 0.0
    a: float = 0.0
    interval: str = "BCa"

    def ci(self, level: float) -> tuple[float, float]:
        if self.se == 0:
            return self.claim_estimate, self.claim_estimate
        # scipy computes the interval from this estimate's own bootstrap distribution, so
        # the interval and the p-values below agree.
        res = stats.bootstrap(
            (np.asarray(self.values),),
            np.mean,
            confidence_level=level,
            n_resamples=0,
            method="BCa" if self.interval == "BCa" else "percentile",
            bootstrap_result=SimpleNamespace(bootstrap_distribution=np.asarray(self.boot)),
        )
        lo, hi = res.confidence_interval
        return self.to_claim(float(lo)), self.to_claim(float(hi))

    def _level(self, q: float) -> float:
        """The α' whose BCa lower bound is the bootstrap quantile ``q``.

        That bound is Q(Φ(z0 + s / (1 − a·s))), s = z0 + z_α' (Efron & Tibshirani 1993,
        eq. 14.10). With u = Φ⁻¹(q) − z0 = s / (1 − a·s): s = u / (1 + a·u), α' = Φ(s − z0).
        Where 1 + a·u ≤ 0, q is outside the range the map reaches, and α' is 0 or 1.
        """
        u = float(special.ndtri(q)) - self.z0
        if (math.isinf(u) and self.a == 0) or 1 + self.a * u <= 0:
            return 0.0 if u < 0 else 1.0
        s = 1 / self.a if math.isinf(u) else u / (1 + self.a * u)
        return float(special.ndtr(s - self.z0))

    def _quantile_of(self, value: float, rightmost: bool) -> float:
        """The q at which the linearly interpolated quantile function of ``boot`` reaches
        ``value`` (scipy's ``stats.quantile`` default); among tied values the last q
        (``rightmost``) or the first."""
        boot = np.asarray(self.boot)
        r = int(np.searchsorted(boot, value, side="right" if rightmost else "left"))
        if r == 0 or r == len(boot):
            return r / len(boot)
        lo, hi = boot[r - 1], boot[r]
        return (r - 1 + (value - lo) / (hi - lo)) / (len(boot) - 1)

    def _p(self, null: float, upper: bool) -> float:
        if self.se == 0:
            return super()._p(null, upper)
        # H0 θ ≤ θ0 is rejected at α exactly when the lower bound at α exceeds θ0, that is
        # when α > the level whose bound is θ0 (ties: the last quantile equal to θ0); the
        # upper bound mirrors it.
        if upper:
            return self._level(self._quantile_of(null, rightmost=True))
        return 1.0 - self._level(self._quantile_of(null, rightmost=False))


@dataclass(frozen=True)
class SignFlipEstimate(TEstimate):
    """The mean of ``values``, with sign-flip p-values and the CI that inverts them.

    ``signs``: the sign patterns (rows of ±1), every one of the 2ⁿ when ``exact``, else
    :data:`N_RESAMPLES` random ones.
    """

    values: tuple[float, ...] = ()
    exact: bool = True
    n_patterns: int = 0
    # per pattern: Σ sᵢxᵢ and Σ sᵢ, so the statistic at any θ0 is one subtraction
    flipped_sum: tuple[float, ...] = ()
    sign_sum: tuple[float, ...] = ()

    def _p(self, null: float, upper: bool) -> float:
        if self.se == 0:
            return super()._p(null, upper)
        if not math.isfinite(null):
            return float(null > 0) if upper else float(null < 0)
        # The statistic Σ sᵢ(xᵢ − θ0) of each pattern against the observed Σ (xᵢ − θ0), and
        # scipy.stats.permutation_test's p-value: the share of patterns at least as extreme,
        # the observed one counted once more when they are drawn at random (the tests compare
        # the two). Ties are within rounding of the values' scale (scipy's tolerance is
        # relative to the observed statistic, which fails when it is near 0).
        x = np.asarray(self.values)
        null_stats = np.asarray(self.flipped_sum) - null * np.asarray(self.sign_sum)
        observed = float(x.sum() - len(x) * null)
        gamma = 100 * np.finfo(float).eps * float(np.abs(x).sum() + len(x) * abs(null))
        hits = (
            np.count_nonzero(null_stats >= observed - gamma)
            if upper
            else np.count_nonzero(null_stats <= observed + gamma)
        )
        if self.exact:
            return hits / self.n_patterns
        return (hits + 1) / (self.n_patterns + 1)

    def ci(self, level: float) -> tuple[float, float]:
        if self.se == 0:
            return self.claim_estimate, self.claim_estimate
        alpha = (1 - level) / 2
        x = np.asarray(self.values)
        span = float(np.ptp(x))
        lo = self._bound(alpha, float(x.min()) - span, self.estimate, upper=True)
        hi = self._bound(alpha, self.estimate, float(x.max()) + span, upper=False)
        return self.to_claim(lo), self.to_claim(hi)

    def _bound(self, alpha: float, a: float, b: float, upper: bool) -> float:
        """Where the one-sided test starts (``upper``: stops) rejecting at ``alpha`` in [a, b].

        No sign pattern makes a mean beyond the data's range, so outside [min, max] of the
        values the p-value is at its extreme; where even that is ≥ α the bound is infinite.
        """
        edge = a if upper else b
        if not self._p(edge, upper) < alpha:
            return -math.inf if upper else math.inf
        for _ in range(100):  # bisection to machine precision
            mid = (a + b) / 2
            if mid in (a, b):
                break
            if (self._p(mid, upper) < alpha) == upper:
                a = mid
            else:
                b = mid
        return b if upper else a


def _jackknife_acceleration(x: np.ndarray) -> float:
    """Efron's acceleration from the jackknife means (as scipy's BCa computes it)."""
    n = len(x)
    jack = (x.sum() - x) / (n - 1)
    dev = jack.mean() - jack
    denom = 6 * (dev**2).sum() ** 1.5
    return float((dev**3).sum() / denom) if denom > 0 else math.nan


def bootstrap_estimate(values: np.ndarray, scale: Scale = "identity") -> BootstrapEstimate:
    """The bootstrap of the mean of per-replicate ``values`` (on the test scale)."""
    check_option("scale", scale, get_args(Scale))
    x = np.asarray(values, dtype=float)
    n = len(x)
    if n < 2:
        raise ValueError("a bootstrap needs at least two replicates")
    if np.ptp(x) == 0:  # nothing to resample (x.std() may be rounding noise, not 0)
        return BootstrapEstimate(float(x[0]), 0.0, n - 1, scale, tuple(x), (float(x[0]),))
    mean, sd = float(x.mean()), float(x.std(ddof=1))
    rng = np.random.default_rng(_SEED)
    boot = np.sort(x[rng.integers(0, n, size=(N_RESAMPLES, n))].mean(axis=1))
    # z0 from the mid-rank share of bootstrap means below the estimate, as scipy's BCa.
    share = (np.count_nonzero(boot < mean) + np.count_nonzero(boot <= mean)) / (2 * len(boot))
    z0 = float(special.ndtri(share))
    a = _jackknife_acceleration(x)
    interval = "BCa"
    if not (math.isfinite(z0) and math.isfinite(a)):
        z0, a, interval = 0.0, 0.0, "percentile"
    return BootstrapEstimate(
        mean, sd / math.sqrt(n), n - 1, scale, tuple(x), tuple(boot), z0, a, interval
    )


def sign_flip_estimate(values: np.ndarray, scale: Scale = "identity") -> SignFlipEstimate:
    """The sign-flip test of the mean of per-replicate ``values`` (on the test scale)."""
    check_option("scale", scale, get_args(Scale))
    x = np.asarray(values, dtype=float)
    n = len(x)
    if n < 2:
        raise ValueError("a sign-flip test needs at least two replicates")
    if np.ptp(x) == 0:
        return SignFlipEstimate(float(x[0]), 0.0, n - 1, scale, tuple(x))
    sd = float(x.std(ddof=1))
    exact = 2**n <= EXACT_MAX
    if exact:
        signs = 1 - 2 * ((np.arange(2**n)[:, None] >> np.arange(n)) & 1)
    else:
        signs = np.random.default_rng(_SEED).choice([-1, 1], size=(N_RESAMPLES, n))
    return SignFlipEstimate(
        float(x.mean()),
        sd / math.sqrt(n),
        n - 1,
        scale,
        tuple(x),
        exact,
        len(signs),
        tuple(signs @ x),
        tuple(signs.sum(axis=1).astype(float)),
    )


def resample(values: np.ndarray, method: str, scale: Scale = "identity") -> TEstimate:
    """The estimate of ``method`` (``bootstrap`` or ``permutation``) from per-replicate values."""
    check_option("method", method, METHODS[1:])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        if method == "bootstrap":
            return bootstrap_estimate(values, scale)
        return sign_flip_estimate(values, scale)


def describe_method(est: TEstimate) -> str:
    """How an estimate's CI and p-values were computed, for the report's method line."""
    n = int(est.df) + 1
    if isinstance(est, BootstrapEstimate):
        if est.se == 0:
            return "bootstrap over replicates (every value equal: no spread to resample)"
        why = "" if est.interval == "BCa" else " (BCa undefined: bias correction not finite)"
        return f"{est.interval} bootstrap over replicates{why}, {N_RESAMPLES} resamples"
    if isinstance(est, SignFlipEstimate):
        if est.exact:
            return f"exact sign-flip test over replicates (all 2^{n} = {2**n} sign patterns)"
        return f"sign-flip test over replicates ({N_RESAMPLES} random sign patterns)"
    return f"t over replicates, {est.df:g} df"
