"""The between-conditions shape (PRODUCT.md §3): a model-level outcome across training conditions.

The data are one outcome per trained model, in a grid of conditions × seeds where every
condition is trained at the same seeds. The seed is the block: models of one seed share their
initialization stream, mini-batch order and (for ablation curves) random orders, so every
comparison is paired by seed. Two models are offered; the report says which one ran.

``ols`` (default): ordinary least squares from statsmodels with seed fixed effects.

- Contrast of condition c against the reference r: fit ``y ~ 1[c] + seed`` on the 2·n models
  of the two conditions with HC2 heteroskedasticity-robust errors; t reference with n − 1 df.
  Each contrast uses only its own two conditions, so conditions with different spreads (a
  strongly regularized one is often more variable) do not borrow each other's variance. In this
  balanced paired design HC2 equals the classical standard error and the estimate is the mean
  within-seed difference, so the test is exactly the paired t-test (checked against
  ``scipy.stats.ttest_rel`` in the tests).
- Level of one condition (``compare: {kind: level}``): its mean outcome against 0, one-sample
  t over seeds (mean, SD/√n, n − 1 df), for an outcome that is a difference from its own
  baseline; no pairing is involved.
- Trend over an ordered grid: fit ``y ~ x + seed`` on all models with errors clustered by seed
  (the replicate; this allows each seed its own slope and any within-seed correlation); t
  reference with n − 1 df (Cameron & Miller 2015, J. Human Resources 50:317, §VI: G − 1 df for
  few clusters).

``mixed``: statsmodels MixedLM (REML) with seed as a random effect, fitted to every condition
at once, where the design allows (at least 3 seeds and a converged fit); otherwise the OLS
above runs and a note says why.

- Contrasts: random intercept per seed, condition as fixed effect. Pooling the residual
  variance over all conditions gives (n − 1)(C − 1) df, the error df of the equivalent
  randomized-block ANOVA, but assumes equal spread in every condition.
- Trend: random intercept and random slope per seed; n − 1 df (the slope varies by seed).
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass, field

import numpy as np
import pandas as pd
import statsmodels.api as sm

from falsify.stats._options import check_option
from falsify.stats.estimate import TEstimate

__all__ = ["BetweenFit", "LackOfFit", "fit_contrasts", "fit_levels", "fit_trend", "lack_of_fit"]


@dataclass(frozen=True)
class LackOfFit:
    """The F test of the level-means model against the straight line (docs/methods.md)."""

    f: float
    df_num: int
    df_den: int
    p: float
    alpha: float

    @property
    def flagged(self) -> bool:
        return self.p < self.alpha

    def note(self) -> str:
        test = (
            f"F({self.df_num}, {self.df_den}) = {self.f:.3g}, p = {self.p:.3g}: the model with "
            "one mean per level against the straight line, both with seed fixed effects"
        )
        if self.flagged:
            return (
                f"Lack of fit: the outcome does not follow a straight line across the levels "
                f"({test}; p < α = {self.alpha:g}). The slope summarizes a pattern that is not "
                "linear (e.g. flat, then a collapse at one end of the grid); read the figure, "
                "or test the levels with reference contrasts, before reading the slope."
            )
        return f"Lack of fit: none detected at α = {self.alpha:g} ({test})."


@dataclass(frozen=True)
class BetweenFit:
    """Estimates by part name, the model that ran, and notes (e.g. why a fallback ran).

    ``values``: per part, the per-seed values whose mean is its estimate (differences from the
    reference, slopes, or levels), for the resampling methods (:mod:`falsify.stats.resampling`).
    """

    estimates: dict[str, TEstimate]
    effect_sizes: dict[str, float]  # standardized: d_z of the per-seed differences or slopes
    method: str
    notes: list[str] = field(default_factory=list)
    values: dict[str, np.ndarray] = field(default_factory=dict)
    lack_of_fit: LackOfFit | None = None


_MODELS = ("ols", "mixed")


def _seed_dummies(seeds: pd.Series) -> np.ndarray:
    codes = pd.Categorical(seeds).codes
    levels = codes.max() + 1
    return np.eye(levels)[codes][:, 1:]  # [rows, seeds − 1]; the first seed is the baseline


def _d_z(values: np.ndarray) -> float:
    sd = float(np.std(values, ddof=1)) if len(values) > 1 else 0.0
    return float(np.mean(values) / sd) if sd > 0 else float("nan")


def _wide(table: pd.DataFrame) -> pd.DataFrame:
    """condition × seed, keeping only seeds with an outcome in every condition."""
    wide = table.pivot(index="seed", columns="condition", values="y")
    return wide.dropna()


def _ols_contrast(wide: pd.DataFrame, reference: str, cond: str) -> TEstimate:
    n = len(wide)
    y = np.concatenate([wide[reference].to_numpy(), wide[cond].to_numpy()])
    is_c = np.repeat([0.0, 1.0], n)
    seeds = pd.Series(np.tile(wide.index.to_numpy(), 2))
    X = np.column_stack([np.ones(2 * n), is_c, _seed_dummies(seeds)])
    res = sm.OLS(y, X).fit(cov_type="HC2")
    return TEstimate(float(res.params[1]), float(res.bse[1]), n - 1)


def _mixed_ok(res: object) -> str | None:
    """Why a MixedLM fit cannot be used, or None."""
    if not getattr(res, "converged", False):
        return "MixedLM did not converge"
    if not np.all(np.isfinite(res.bse_fe)):  # type: ignore[attr-defined]
        return "MixedLM gave non-finite standard errors"
    return None


def fit_contrasts(
    table: pd.DataFrame, reference: str, conditions: list[str], model: str
) -> BetweenFit:
    """Each of ``conditions`` minus ``reference``; ``table`` has columns condition, seed, y."""
    check_option("model", model, _MODELS)
    wide = _wide(table)
    n = len(wide)
    notes: list[str] = []
    dropped = table["seed"].nunique() - n
    if dropped:
        notes.append(f"{dropped} seed(s) without an outcome in every condition were left out.")
    if n < 2:
        raise ValueError("contrasts need at least 2 seeds with an outcome in every condition")
    others = [c for c in conditions if c != reference]
    values = {c: (wide[c] - wide[reference]).to_numpy(float) for c in others}
    effect = {c: _d_z(v) for c, v in values.items()}
    if model == "mixed":
        why = None if n >= 3 else f"only {n} seeds (MixedLM needs at least 3)"
        if why is None:
            long = wide.reset_index().melt(id_vars="seed", var_name="condition", value_name="y")
            X = np.column_stack(
                [np.ones(len(long))] + [(long["condition"] == c).to_numpy(float) for c in others]
            )
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                try:
                    res = sm.MixedLM(long["y"].to_numpy(float), X, groups=long["seed"]).fit(
                        reml=True
                    )
                    why = _mixed_ok(res)
                except (np.linalg.LinAlgError, ValueError) as exc:
                    why = f"MixedLM failed ({exc})"
        if why is None:
            df = (n - 1) * (len(conditions) - 1)
            est = {
                c: TEstimate(float(res.fe_params[i + 1]), float(res.bse_fe[i + 1]), df)
                for i, c in enumerate(others)
            }
            if float(np.asarray(res.cov_re).ravel()[0]) <= 1e-12:
                notes.append(
                    "MixedLM estimated the seed variance at 0 (no shared seed effect); its "
                    "contrasts are then unpaired and conservative."
                )
            return BetweenFit(
                est,
                effect,
                f"MixedLM (REML), seed random intercept, all {len(conditions)} conditions; "
                f"t with (n−1)(C−1) = {df} df",
                notes,
                values,
            )
        notes.append(f"model: mixed was asked for, but {why}; OLS ran instead.")
    est = {c: _ols_contrast(wide, reference, c) for c in others}
    return BetweenFit(
        est,
        effect,
        f"OLS with seed fixed effects (paired by seed), HC2 robust SE; t with n−1 = {n - 1} df",
        notes,
        values,
    )


def lack_of_fit(table: pd.DataFrame, alpha: float) -> LackOfFit | None:
    """The F test of one mean per level of x against a straight line in x, both with seed
    fixed effects (the pairing by seed), on the replicate-level ``table`` (seed, x, y).

    statsmodels' ``compare_f_test`` of the nested OLS fits; with one model per seed and level
    the error term is the seed × level interaction, the randomized-block ANOVA's. A seed's own
    slope is linear in x and so is not read as lack of fit; it only widens the error term.
    None when there are fewer than 3 levels (a line through 2 level means fits exactly) or no
    error degrees of freedom.
    """
    levels = np.sort(table["x"].unique())
    if len(levels) < 3:
        return None
    x = table["x"].to_numpy(float)
    seeds = _seed_dummies(table["seed"])
    level_dummies = (x[:, None] == levels[None, 1:]).astype(float)
    y = table["y"].to_numpy(float)
    full = sm.OLS(y, np.column_stack([np.ones(len(y)), level_dummies, seeds])).fit()
    linear = sm.OLS(y, np.column_stack([np.ones(len(y)), x, seeds])).fit()
    if full.df_resid < 1 or full.ssr <= 0:
        return None
    f, p, df_num = full.compare_f_test(linear)
    return LackOfFit(float(f), int(df_num), int(full.df_resid), float(p), alpha)


def fit_trend(table: pd.DataFrame, model: str, alpha: float | None = 0.05) -> BetweenFit:
    """Slope of y on x; ``table`` has columns seed, x, y (one row per trained model).

    A lack-of-fit test (:func:`lack_of_fit` at ``alpha``) says whether the slope summarizes a
    straight line; its result is a note. ``alpha`` None: no check (the calibration needs only
    the slope).
    """
    check_option("model", model, _MODELS)
    table = table.dropna(subset=["y"])
    seeds = sorted(table["seed"].unique())
    n = len(seeds)
    if n < 2 or table["x"].nunique() < 2:
        raise ValueError("a trend needs at least 2 seeds and 2 distinct values of the factor")
    slopes = np.array(
        [np.polyfit(g["x"], g["y"], 1)[0] for _, g in table.groupby("seed") if g["x"].nunique() > 1]
    )
    effect = {"trend": _d_z(slopes)}
    lof = lack_of_fit(table, alpha) if alpha is not None else None
    notes: list[str] = [lof.note()] if lof is not None else []
    if model == "mixed":
        why = None if n >= 3 else f"only {n} seeds (MixedLM needs at least 3)"
        if why is None:
            X = np.column_stack([np.ones(len(table)), table["x"].to_numpy(float)])
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                try:
                    res = sm.MixedLM(
                        table["y"].to_numpy(float), X, groups=table["seed"], exog_re=X
                    ).fit(reml=True)
                    why = _mixed_ok(res)
                except (np.linalg.LinAlgError, ValueError) as exc:
                    why = f"MixedLM failed ({exc})"
        if why is None:
            est = TEstimate(float(res.fe_params[1]), float(res.bse_fe[1]), n - 1)
            return BetweenFit(
                {"trend": est},
                effect,
                f"MixedLM (REML), seed random intercept and slope; t with n−1 = {n - 1} df",
                notes,
                {"trend": slopes},
                lof,
            )
        notes.append(f"model: mixed was asked for, but {why}; OLS ran instead.")
    X = np.column_stack(
        [np.ones(len(table)), table["x"].to_numpy(float), _seed_dummies(table["seed"])]
    )
    res = sm.OLS(table["y"].to_numpy(float), X).fit(
        cov_type="cluster", cov_kwds={"groups": pd.Categorical(table["seed"]).codes}
    )
    est = TEstimate(float(res.params[1]), float(res.bse[1]), n - 1)
    return BetweenFit(
        {"trend": est},
        effect,
        f"OLS with seed fixed effects, SE clustered by seed; t with n−1 = {n - 1} df",
        notes,
        {"trend": slopes},
        lof,
    )


def fit_levels(table: pd.DataFrame, conditions: list[str]) -> BetweenFit:
    """Each condition's mean outcome against 0; ``table`` has columns condition, seed, y.

    The one-sample t over the condition's seeds: estimate = mean, SE = SD / √n, n − 1 df.
    """
    est: dict[str, TEstimate] = {}
    effect: dict[str, float] = {}
    values: dict[str, np.ndarray] = {}
    ns = []
    for c in conditions:
        y = table.loc[table["condition"] == c, "y"].dropna().to_numpy(float)
        if len(y) < 2:
            raise ValueError(f"the level of {c} needs at least 2 seeds with an outcome")
        est[c] = TEstimate(float(y.mean()), float(y.std(ddof=1) / np.sqrt(len(y))), len(y) - 1)
        effect[c] = _d_z(y)
        values[c] = y
        ns.append(len(y))
    dfs = ", ".join(sorted({str(n - 1) for n in ns}))
    return BetweenFit(
        est, effect, f"one-sample t over seeds against 0; t with n−1 = {dfs} df", [], values
    )
