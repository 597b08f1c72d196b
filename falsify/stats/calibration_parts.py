"""Calibration of multi-part verdicts: the adjustment that matches the combination rule.

A hypothesis with m parts is simulated with the targeted-vs-control model of
:mod:`falsify.stats.calibration` in every part, each part's true effect set on its own. The
least-favourable configurations of each overall error are simulated (Berger 1982,
Technometrics 24:295, for the intersection–union side):

- ``all``, false SUPPORTED: one part at θ = 0, the others far above δ (every other part is
  surely supported, so the overall verdict rests on the null part alone);
- ``all``, false FALSIFIED: every part at θ = δ;
- ``any``, false SUPPORTED: every part at θ = 0;
- ``any``, false FALSIFIED: one part at θ = δ, the others far below it.

Power is P(SUPPORTED) under ``all`` with every part at θ = m·δ, and P(FALSIFIED) under ``any``
with every part at θ = δ − m·δ (m·δ below the SESOI): the verdict whose p-value the matched rule
leaves unadjusted. Each simulated study is decided twice on the same draws, by the product's
rule (:func:`falsify.stats.decide.part_verdicts`) and by the former rule that adjusted both
p-values, so the power gain is a paired comparison.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pandas as pd

from falsify.stats.calibration import SIMULATORS, Simulator
from falsify.stats.decide import part_verdicts
from falsify.stats.estimate import TEstimate
from falsify.stats.verdict import Verdict, combine_verdicts, p_values, verdict_from_p

__all__ = ["RULES", "calibrate_parts"]

# The product's rule and, for comparison, the former one (Holm on both p-values).
RULES = ("matched to combine", "both adjusted (former)")
_FAR = 10.0  # "far" from a boundary, in SESOI units: that part's verdict is all but certain


def _verdict(
    ests: list[TEstimate], sesoi: float, alpha: float, combine: str, adjust: str, rule: str
) -> Verdict:
    ps = np.array([p_values(e, "positive", sesoi) for e in ests])
    if rule == RULES[0]:
        _, _, verdicts = part_verdicts(ps[:, 0], ps[:, 1], alpha, combine, adjust)
    else:
        # The former rule: p_support adjusted as under `any`, p_falsify as under `all`.
        sup, _, _ = part_verdicts(ps[:, 0], ps[:, 1], alpha, "any", adjust)
        _, fal, _ = part_verdicts(ps[:, 0], ps[:, 1], alpha, "all", adjust)
        verdicts = [verdict_from_p(s, f, alpha) for s, f in zip(sup, fal, strict=True)]
    return combine_verdicts(verdicts, combine)


def _rates(
    sim: Simulator,
    rng: np.random.Generator,
    k: int,
    thetas: Sequence[float],
    n: int,
    alpha: float,
    combine: str,
    adjust: str,
    target: Verdict,
) -> dict[str, float]:
    """P(overall verdict is ``target``) under each rule, on the same simulated studies."""
    hits = dict.fromkeys(RULES, 0)
    for _ in range(n):
        ests = [sim.simulate(rng, k, t) for t in thetas]
        for rule in RULES:
            hits[rule] += _verdict(ests, sim.sesoi, alpha, combine, adjust, rule) is target
    return {rule: c / n for rule, c in hits.items()}


def calibrate_parts(
    simulator: Simulator | None = None,
    parts: int = 3,
    replicates: Sequence[int] = (3, 5, 10, 20),
    n_sims: int = 1000,
    alpha: float = 0.05,
    power_at: Sequence[float] = (2.0, 3.0),
    adjust: str = "holm",
    seed: int = 0,
) -> pd.DataFrame:
    """One row per combine rule × adjustment rule × k: both overall error rates and power.

    ``simulator`` defaults to the targeted-vs-control paired t (normal model noise).
    """
    sim = simulator or next(s for s in SIMULATORS if s.shape == "targeted-vs-control")
    d = sim.sesoi
    rest = [_FAR * d] * (parts - 1)
    configs = {
        "all": {
            "supported_under_null": ([0.0, *rest], Verdict.SUPPORTED),
            "falsified_at_sesoi": ([d] * parts, Verdict.FALSIFIED),
            **{f"power_at_{m:g}_sesoi": ([m * d] * parts, Verdict.SUPPORTED) for m in power_at},
        },
        "any": {
            "supported_under_null": ([0.0] * parts, Verdict.SUPPORTED),
            "falsified_at_sesoi": ([d, *(-t for t in rest)], Verdict.FALSIFIED),
            **{f"power_at_{m:g}_sesoi": ([d - m * d] * parts, Verdict.FALSIFIED) for m in power_at},
        },
    }
    mc_se = float(np.sqrt(alpha * (1 - alpha) / n_sims))
    rows = []
    for ci, (combine, cells) in enumerate(configs.items()):
        for k in replicates:
            rng = np.random.default_rng([seed, ci, k])
            rates = {
                col: _rates(sim, rng, k, thetas, n_sims, alpha, combine, adjust, target)
                for col, (thetas, target) in cells.items()
            }
            for rule in RULES:
                row = {
                    "combine": combine,
                    "rule": rule,
                    "parts": parts,
                    "replicates": k,
                    **{col: r[rule] for col, r in rates.items()},
                }
                row["calibrated"] = bool(
                    row["supported_under_null"] <= alpha + 3 * mc_se
                    and row["falsified_at_sesoi"] <= alpha + 3 * mc_se
                )
                rows.append(row)
    table = pd.DataFrame(rows)
    table.attrs.update(
        alpha=alpha, n_sims=n_sims, mc_se=mc_se, adjust=adjust, method=sim.method, model=sim.model
    )
    return table
