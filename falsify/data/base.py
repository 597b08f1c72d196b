"""The in-memory form every dataset loader returns."""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch

from falsify.errors import LocatedError

__all__ = ["Dataset", "stratified_split"]


@dataclass(frozen=True)
class Dataset:
    """A train/test split held as tensors.

    ``x_*`` are float32 of shape ``[n, *input_shape]``; ``y_*`` are int64 class indices ``[n]``.
    """

    name: str
    x_train: torch.Tensor
    y_train: torch.Tensor
    x_test: torch.Tensor
    y_test: torch.Tensor
    n_classes: int

    @property
    def input_shape(self) -> tuple[int, ...]:
        return tuple(self.x_train.shape[1:])

    def split(self, which: str) -> tuple[torch.Tensor, torch.Tensor]:
        """``(x, y)`` of the ``"train"`` or ``"test"`` split."""
        if which == "train":
            return self.x_train, self.y_train
        return self.x_test, self.y_test


def stratified_split(
    x: np.ndarray, y: np.ndarray, test_fraction: float, seed: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """scikit-learn's ``train_test_split`` stratified by class, fixed by ``seed``.

    It needs at least one example of every class in each split; a ``test_fraction`` that leaves
    fewer is a :class:`LocatedError` on ``population.data.test_fraction`` saying which
    fractions work, not scikit-learn's ``ValueError`` (its rule: the test split holds
    ``ceil(test_fraction * n)`` examples, the train split the rest).
    """
    from sklearn.model_selection import train_test_split

    n, k = len(y), len(np.unique(y))
    n_test = math.ceil(test_fraction * n)
    if min(n_test, n - n_test) < k:
        raise LocatedError(
            ("population", "data", "test_fraction"),
            f"a fraction that leaves at least one example of each of the {k} classes in both "
            f"the test and the train split (about {k / n:.2g} to {1 - k / n:.3g} for these {n:,} "
            f"examples; this one gives {n_test:,} test and {n - n_test:,} train examples)",
            test_fraction,
        )
    return train_test_split(x, y, test_size=test_fraction, stratify=y, random_state=seed)
