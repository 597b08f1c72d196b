"""The test shapes (PRODUCT.md §3), looked up by the test's ``kind``."""

from __future__ import annotations

from collections.abc import Callable

from falsify.data import Dataset
from falsify.hypothesis.loader import HypothesisFile
from falsify.runner.association import run_association
from falsify.runner.between import run_between, validate_between
from falsify.runner.outcome import Outcome
from falsify.runner.replicates import Replicate

__all__ = ["GRID_SHAPES", "SHAPES", "VALIDATORS"]

# kind -> executor(hypothesis file, dataset, replicates) -> Outcome
SHAPES: dict[str, Callable[[HypothesisFile, Dataset, list[Replicate]], Outcome]] = {
    "association": run_association,
    "between_conditions": run_between,
}

# kind -> check(hypothesis file, dataset) raising the file's line-aware error; run before any
# model is trained.
VALIDATORS: dict[str, Callable[[HypothesisFile, Dataset], None]] = {
    "between_conditions": validate_between,
}

# The shapes that compare the conditions of a population grid; others refuse a grid.
GRID_SHAPES: frozenset[str] = frozenset({"between_conditions"})
