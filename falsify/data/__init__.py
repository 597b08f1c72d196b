"""Datasets, looked up by ``kind``. Nothing is downloaded: ``digits`` ships with scikit-learn."""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any

from falsify.data.base import Dataset
from falsify.data.digits import load_digits_dataset
from falsify.data.synthetic import load_synthetic, planted_model
from falsify.errors import FalsifyError

__all__ = ["DATASETS", "Dataset", "load_dataset", "planted_model"]

DATASETS: dict[str, Callable[[Any], Dataset]] = {
    "digits": load_digits_dataset,
    "synthetic": load_synthetic,
}


@functools.lru_cache(maxsize=8)
def load_dataset(spec: Any) -> Dataset:
    """Load the dataset a validated spec names (memoized: specs are frozen and hashable)."""
    try:
        return DATASETS[spec.kind](spec)
    except ValueError as exc:
        # scikit-learn's split refuses e.g. a test set smaller than the number of classes.
        raise FalsifyError(
            f"The 'population.data' ({spec.kind}) cannot be split as asked: {exc}"
        ) from None
