"""Statistics: pooled estimates over replicates, verdict rules, multiplicity."""

from falsify.stats.association import correlation, pool_correlations
from falsify.stats.decide import Part, decide
from falsify.stats.estimate import TEstimate
from falsify.stats.verdict import (
    Verdict,
    combine_verdicts,
    p_values,
    verdict_from_ci,
    verdict_from_p,
)

__all__ = [
    "Part",
    "TEstimate",
    "Verdict",
    "combine_verdicts",
    "correlation",
    "decide",
    "p_values",
    "pool_correlations",
    "verdict_from_ci",
    "verdict_from_p",
]
