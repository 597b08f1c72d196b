"""The verdict rules of PRODUCT.md §4, exactly.

θ is oriented so that the claim predicts θ > 0 (for ``negative`` claims the sign is flipped).
Each verdict is a one-sided test at level α, equivalently read off the (1 − 2α) CI [lo, hi]:

- ``positive``/``negative``: SUPPORTED when lo > 0 and hi ≥ δ; FALSIFIED when hi < δ;
  INCONCLUSIVE otherwise.
- ``none``: SUPPORTED when −δ < lo and hi < δ (TOST); FALSIFIED when lo > δ or hi < −δ;
  INCONCLUSIVE otherwise.

:func:`verdict_from_ci` states the rules on the interval; :func:`p_values` and
:func:`verdict_from_p` state the same rules as tests, which is what lets several parts of one
hypothesis be adjusted for multiplicity (Holm) before the verdict is read.
"""

from __future__ import annotations

from collections.abc import Sequence
from enum import Enum

from falsify.stats._options import check_option
from falsify.stats.estimate import TEstimate

DIRECTIONS = ("positive", "negative", "none")

__all__ = [
    "DIRECTIONS",
    "Verdict",
    "combine_verdicts",
    "p_values",
    "verdict_from_ci",
    "verdict_from_p",
]


class Verdict(str, Enum):
    SUPPORTED = "SUPPORTED"
    FALSIFIED = "FALSIFIED"
    INCONCLUSIVE = "INCONCLUSIVE"

    def __str__(self) -> str:
        return self.value


def verdict_from_ci(lo: float, hi: float, direction: str, sesoi: float) -> Verdict:
    """The §4 rule on a (1 − 2α) CI ``[lo, hi]`` given in the claim's units (not oriented)."""
    check_option("direction", direction, DIRECTIONS)
    if direction == "negative":
        lo, hi = -hi, -lo
    if direction == "none":
        if -sesoi < lo and hi < sesoi:
            return Verdict.SUPPORTED
        if lo > sesoi or hi < -sesoi:
            return Verdict.FALSIFIED
        return Verdict.INCONCLUSIVE
    if hi < sesoi:
        return Verdict.FALSIFIED
    if lo > 0:
        return Verdict.SUPPORTED
    return Verdict.INCONCLUSIVE


def p_values(est: TEstimate, direction: str, sesoi: float) -> tuple[float, float]:
    """``(p_support, p_falsify)``: the one-sided tests behind SUPPORTED and FALSIFIED.

    ``positive``: p_support tests H0 θ ≤ 0, p_falsify tests H0 θ ≥ δ. ``negative`` mirrors it.
    ``none``: p_support is the TOST p (max of H0 θ ≤ −δ and H0 θ ≥ δ); p_falsify is the
    minimum-effect p (min of H0 θ ≤ δ and H0 θ ≥ −δ; at most one of them can be small).
    """
    check_option("direction", direction, DIRECTIONS)
    if direction == "positive":
        return est.p_greater(0.0), est.p_less(sesoi)
    if direction == "negative":
        return est.p_less(0.0), est.p_greater(-sesoi)
    tost = max(est.p_greater(-sesoi), est.p_less(sesoi))
    minimum_effect = min(est.p_greater(sesoi), est.p_less(-sesoi))
    return tost, minimum_effect


def verdict_from_p(p_support: float, p_falsify: float, alpha: float) -> Verdict:
    """FALSIFIED if its test rejects at α, else SUPPORTED if its test rejects, else INCONCLUSIVE.

    For directional claims both can reject (a real but negligible effect): FALSIFIED wins, as
    in the interval rule (hi < δ). For ``none`` claims the two cannot both reject.
    """
    if p_falsify < alpha:
        return Verdict.FALSIFIED
    if p_support < alpha:
        return Verdict.SUPPORTED
    return Verdict.INCONCLUSIVE


def combine_verdicts(verdicts: Sequence[Verdict], rule: str) -> Verdict:
    """One verdict for a hypothesis with several parts (layers, k values, contrasts).

    ``all`` (the claim holds in every part): SUPPORTED if every part is, FALSIFIED if any part
    is. ``any`` (the claim holds somewhere): SUPPORTED if any part is, FALSIFIED if every part is.
    """
    check_option("combine", rule, ("all", "any"))
    vs = list(verdicts)
    if rule == "all":
        if all(v is Verdict.SUPPORTED for v in vs):
            return Verdict.SUPPORTED
        if any(v is Verdict.FALSIFIED for v in vs):
            return Verdict.FALSIFIED
        return Verdict.INCONCLUSIVE
    if any(v is Verdict.SUPPORTED for v in vs):
        return Verdict.SUPPORTED
    if all(v is Verdict.FALSIFIED for v in vs):
        return Verdict.FALSIFIED
    return Verdict.INCONCLUSIVE
