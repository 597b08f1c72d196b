"""The test shapes (PRODUCT.md §3), looked up by the test's ``kind``."""

from __future__ import annotations

from collections.abc import Callable

from torch import nn

from falsify.data import Dataset
from falsify.hypothesis.loader import HypothesisFile
from falsify.runner.association import check_association, run_association
from falsify.runner.between import run_between, validate_between
from falsify.runner.outcome import Outcome
from falsify.runner.replicates import Replicate
from falsify.runner.specialization import check_cluster_specialization, run_cluster_specialization
from falsify.runner.targeted import check_targeted, run_targeted

__all__ = ["GRID_SHAPES", "SHAPES", "SHAPE_CHECKS"]

# kind -> executor(hypothesis file, dataset, replicates) -> Outcome
SHAPES: dict[str, Callable[[HypothesisFile, Dataset, list[Replicate]], Outcome]] = {
    "association": run_association,
    "targeted": run_targeted,
    "between_conditions": run_between,
    "cluster_specialization": run_cluster_specialization,
}

# kind -> check(hypothesis file, untrained model, dataset): validation that needs the real model
# beyond the layer names (raises the file's one-line error).
SHAPE_CHECKS: dict[str, Callable[[HypothesisFile, nn.Module, Dataset], None]] = {
    "association": check_association,
    "targeted": check_targeted,
    "between_conditions": lambda hf, _model, data: validate_between(hf, data),
    "cluster_specialization": check_cluster_specialization,
}


# The shapes that compare the conditions of a population grid; others refuse a grid.
GRID_SHAPES: frozenset[str] = frozenset({"between_conditions"})
