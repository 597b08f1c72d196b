"""Replication: a hypothesis rerun on a fresh, disjoint set of seeds, compared with its run.

PRODUCT.md §12. The replication is the same file with only ``population.seeds`` changed, each
seed shifted by one offset, so it trains new models of the same recipe; it runs through the same
pipeline as ``falsify run`` (:func:`falsify.runner.run.run_hypothesis`). :func:`compare` puts
the two outcomes side by side and reads whether they agree (docs/verdicts.md, "Replication").
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, replace

import pandas as pd

from falsify.errors import FalsifyError
from falsify.hypothesis.loader import HypothesisFile
from falsify.runner.outcome import Outcome
from falsify.stats.verdict import Verdict

__all__ = [
    "AGREEMENTS",
    "MAX_SEED",
    "SEED_BLOCK",
    "Replication",
    "compare",
    "default_offset",
    "replication_file",
    "replication_seeds",
]

# The default offset is the smallest multiple of this above every seed, so seeds 0..9 replicate
# on 1000..1009, and a file may grow to 1,000 seeds before its seeds reach those.
SEED_BLOCK = 1000

# From best to worst; a replication has the first that holds (docs/verdicts.md, "Replication").
AGREEMENTS = ("agrees", "estimate differs", "verdict differs", "contradicts")

# The largest seed :data:`falsify.hypothesis.types.Seed` accepts.
MAX_SEED = 2**32 - 1

_CONFIDENT = {Verdict.SUPPORTED.value, Verdict.FALSIFIED.value}


def default_offset(seeds: Sequence[int]) -> int:
    """The smallest multiple of :data:`SEED_BLOCK` above every seed (1000 for seeds 0..9)."""
    return SEED_BLOCK * (max(seeds) // SEED_BLOCK + 1)


def replication_seeds(seeds: Sequence[int], offset: int | None = None) -> tuple[int, ...]:
    """Each seed plus ``offset`` (:func:`default_offset` when None); refused unless every new
    seed is a valid seed and none is one of ``seeds``."""
    offset = default_offset(seeds) if offset is None else offset
    if offset < 1:
        raise FalsifyError(f"The seed offset must be a positive integer. Got {offset} instead.")
    new = tuple(s + offset for s in seeds)
    shared = sorted(set(new) & set(seeds))
    if shared:
        raise FalsifyError(
            f"The seed offset {offset} must give seeds disjoint from the file's {list(seeds)}. "
            f"Got {len(shared)} shared, e.g. seed {shared[0]}; the default offset "
            f"({default_offset(seeds)}) never overlaps."
        )
    if max(new) > MAX_SEED:
        raise FalsifyError(
            f"The seed offset {offset} must keep every seed at most {MAX_SEED}. Got seed "
            f"{max(new)} instead."
        )
    return new


def replication_file(hf: HypothesisFile, offset: int | None = None) -> HypothesisFile:
    """``hf`` with its seeds shifted by ``offset``, marked as an override in its report.

    A list of checkpoints is refused: it names the models themselves, so the shifted seeds would
    relabel the same models rather than replicate them (a ``{seed}`` template names new files).
    """
    pop = hf.hypothesis.population
    if isinstance(getattr(pop.model, "checkpoint", None), tuple):
        raise hf.error(
            ("population", "model", "checkpoint"),
            "a path template with '{seed}' to replicate on fresh seeds (a list names the "
            "models themselves, which would be the same models under new seeds)",
            "a list of paths",
        )
    seeds = replication_seeds(pop.seeds, offset)
    hyp = hf.hypothesis.model_copy(update={"population": pop.model_copy(update={"seeds": seeds})})
    override = f"population.seeds=[{','.join(map(str, seeds))}]"
    return replace(hf, hypothesis=hyp, overrides=(*hf.overrides, override))


@dataclass(frozen=True)
class Replication:
    """A hypothesis' run and its replication on fresh seeds, side by side.

    ``parts``: one row per part, each run's verdict, estimate and (1 − 2α) CI, and whether they
    agree (``same_verdict``; ``in_original_ci``: the replication's estimate inside the original
    CI; ``original_in_replication_ci``; ``contradicts``: SUPPORTED in one, FALSIFIED in the
    other). ``agreement`` is one of :data:`AGREEMENTS` for the whole hypothesis.
    """

    original: Outcome
    replication: Outcome
    offset: int
    parts: pd.DataFrame

    @property
    def contradicts(self) -> bool:
        """A confident contradiction: SUPPORTED in one run, FALSIFIED in the other."""
        verdicts = {self.original.verdict.value, self.replication.verdict.value}
        return verdicts == _CONFIDENT

    @property
    def agreement(self) -> str:
        if self.contradicts:
            return "contradicts"
        if self.original.verdict is not self.replication.verdict:
            return "verdict differs"
        return "agrees" if self.parts["in_original_ci"].all() else "estimate differs"


def compare(original: Outcome, replication: Outcome, offset: int) -> Replication:
    """The two outcomes of one hypothesis side by side, part by part."""
    cols = ["part", "verdict", "estimate", "ci_low", "ci_high", "n_replicates"]
    a = original.parts[cols].add_prefix("original_").rename(columns={"original_part": "part"})
    b = replication.parts[cols].add_prefix("replication_")
    b = b.rename(columns={"replication_part": "part"})
    parts = a.merge(b, on="part", how="left", validate="one_to_one")
    parts["same_verdict"] = parts["original_verdict"] == parts["replication_verdict"]
    est = parts["replication_estimate"]
    parts["in_original_ci"] = est.between(parts["original_ci_low"], parts["original_ci_high"])
    parts["original_in_replication_ci"] = parts["original_estimate"].between(
        parts["replication_ci_low"], parts["replication_ci_high"]
    )
    pair = parts[["original_verdict", "replication_verdict"]]
    parts["contradicts"] = pair.isin(_CONFIDENT).all(axis=1) & ~parts["same_verdict"]
    return Replication(original, replication, offset, parts)
