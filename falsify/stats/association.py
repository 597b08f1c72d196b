"""The association shape (PRODUCT.md §3): per-unit x vs per-unit y within each model.

Each replicate (trained model) contributes one correlation across its units. The units of one
model are not independent samples, so no p-value is computed across units; the replicates are
the sample, and their correlations are pooled on the Fisher-z scale by one of:

- ``t`` (default): a one-sample t interval of the per-replicate z values, df = k − 1. Its only
  assumption is that the k per-replicate z values are exchangeable and roughly normal; the
  between-model spread is measured, not modelled, and coverage is exact at any k ≥ 2 under
  normality. This is why it is the default for the 3–10 seeds users run.
- ``random_effects``: inverse-variance random-effects meta-analysis (DerSimonian–Laird τ²) with
  the Hartung–Knapp–Sidik–Jonkman variance and t(k − 1) reference (statsmodels
  ``combine_effects``, "random effect wls" row). Plain DerSimonian–Laird with a normal reference
  is anti-conservative for small k (IntHout et al. 2014, BMC Med Res Methodol 14:25), so it is
  not offered.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from scipy import stats
from statsmodels.stats.meta_analysis import combine_effects

from falsify.stats._options import check_option
from falsify.stats.estimate import TEstimate

__all__ = ["correlation", "fisher_z", "fisher_z_variance", "pool_correlations"]

_R_MAX = 1 - 1e-9  # keeps arctanh finite for a perfect correlation
_METHODS = ("spearman", "pearson", "kendall")
_POOLINGS = ("t", "random_effects")


def correlation(x: np.ndarray, y: np.ndarray, method: str) -> float:
    """Correlation of ``x`` and ``y`` across units; NaN when undefined (< 3 units, a constant)."""
    check_option("method", method, _METHODS)
    x, y = np.asarray(x, dtype=float), np.asarray(y, dtype=float)
    if len(x) < 3 or not (np.isfinite(x).all() and np.isfinite(y).all()):
        return float("nan")
    if np.ptp(x) == 0 or np.ptp(y) == 0:
        return float("nan")
    if method == "spearman":
        return float(stats.spearmanr(x, y).statistic)
    if method == "pearson":
        return float(stats.pearsonr(x, y).statistic)
    return float(stats.kendalltau(x, y).statistic)


def fisher_z(r: Sequence[float]) -> np.ndarray:
    """atanh(r), with |r| = 1 kept finite: the test scale of a pooled correlation."""
    return np.arctanh(np.clip(np.asarray(r, dtype=float), -_R_MAX, _R_MAX))


def fisher_z_variance(n: np.ndarray, method: str) -> np.ndarray:
    """Sampling variance of atanh(r) over n units (Fieller, Hartley & Pearson 1957).

    Pearson 1/(n − 3); Spearman 1.06/(n − 3); Kendall 0.437/(n − 4).
    """
    check_option("method", method, _METHODS)
    if method == "kendall":
        return 0.437 / (n - 4.0)
    return (1.06 if method == "spearman" else 1.0) / (n - 3.0)


def pool_correlations(
    r: Sequence[float], n_units: Sequence[int], pooling: str, method: str = "spearman"
) -> TEstimate:
    """Pool per-replicate correlations ``r`` (each over ``n_units`` units) into one estimate.

    With the same number of units in every replicate the HKSJ weights are equal and the HKSJ
    interval is exactly the t interval; the two differ when replicates differ in size.
    """
    check_option("pooling", pooling, _POOLINGS)
    check_option("method", method, _METHODS)
    z = fisher_z(r)
    k = len(z)
    if k < 2:
        raise ValueError("pooling needs at least two replicates")
    if pooling == "t":
        return TEstimate(float(z.mean()), float(z.std(ddof=1) / np.sqrt(k)), k - 1, "fisher_z")
    n = np.asarray(n_units, dtype=float)
    if n.min() <= 4:
        raise ValueError("random-effects pooling needs more than 4 units per replicate")
    variance = fisher_z_variance(n, method)
    res = combine_effects(z, variance, method_re="dl", use_t=True)
    return TEstimate(float(res.mean_effect_re), float(res.sd_eff_w_re_hksj), k - 1, "fisher_z")
