"""Datasets, looked up by ``kind``. Nothing is downloaded: ``digits`` ships with scikit-learn;
``mnist`` and ``cifar10`` are read from a folder the user names; ``loader`` is the user's own."""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any

from falsify.data.base import Dataset
from falsify.data.digits import load_digits_dataset
from falsify.data.standard import files_stamp, load_cifar10, load_mnist
from falsify.data.synthetic import load_synthetic
from falsify.data.user import load_user_data
from falsify.errors import FalsifyError

__all__ = ["DATASETS", "Dataset", "load_dataset"]

DATASETS: dict[str, Callable[[Any], Dataset]] = {
    "digits": load_digits_dataset,
    "synthetic": load_synthetic,
    "mnist": load_mnist,
    "cifar10": load_cifar10,
    "loader": load_user_data,
}


def load_dataset(spec: Any) -> Dataset:
    """Load the dataset a validated spec names (memoized: specs are frozen and hashable).

    Data read from a folder is memoized with its files' sizes and times, so an edited or
    replaced file is read again.
    """
    return _load(spec, files_stamp(spec))


@functools.lru_cache(maxsize=8)
def _load(spec: Any, _stamp: tuple[tuple[str, int, int], ...]) -> Dataset:
    try:
        return DATASETS[spec.kind](spec)
    except ValueError as exc:
        # scikit-learn's split refuses e.g. a test set smaller than the number of classes.
        raise FalsifyError(
            f"The 'population.data' ({spec.kind}) cannot be split as asked: {exc}"
        ) from None
