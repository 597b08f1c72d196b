"""The in-memory form every dataset loader returns, and how sequence labels are scored."""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch

from falsify.errors import LocatedError

__all__ = ["IGNORE", "Dataset", "answer_labels", "per_example_scores", "stratified_split"]

# The label of a position that is not scored (PyTorch's ``ignore_index`` of cross-entropy).
IGNORE = -100


@dataclass(frozen=True)
class Dataset:
    """A train/test split held as tensors.

    Classification data: ``x_*`` float32 ``[n, *input_shape]``, ``y_*`` int64 class indices
    ``[n]``. Token (sequence) data: ``x_*`` int64 token ids ``[n, T]`` and ``y_*`` int64 ``[n, T]``,
    the answer expected at each position and :data:`IGNORE` where nothing is scored; token ids run
    over ``0..n_classes``, where ``n_classes`` itself is the one token a model is never asked to
    predict (the ``=`` of modular addition, the BOS of the other tasks), so the model reads
    ``n_classes + 1`` tokens and predicts ``n_classes`` (docs/sequence-models.md).
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


def per_example_scores(logits: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """``(correct, cross-entropy)``, each float64 ``[rows]``, of each example.

    ``logits`` ``[rows, classes]`` with ``y`` ``[rows]``; or per-position logits ``[rows, T,
    classes]`` with ``y`` ``[rows, T]``, where an example's score is its mean over the scored
    positions (``y != IGNORE``); summed over examples and divided by their number, as the
    ablation engine does, it is a mean over examples of per-example means.
    """
    if logits.dim() == 2:
        correct = (logits.argmax(dim=-1) == y).to(torch.float64)
        ce = -logits.log_softmax(dim=-1).gather(-1, y.unsqueeze(-1)).squeeze(-1)
        return correct, ce.to(torch.float64)
    scored = y != IGNORE  # [rows, T]
    target = y.clamp(min=0)
    correct = (logits.argmax(dim=-1) == target) & scored
    ce = -logits.log_softmax(dim=-1).gather(-1, target.unsqueeze(-1)).squeeze(-1)
    n = scored.sum(dim=1).clamp(min=1).to(torch.float64)
    ce = torch.where(scored, ce.to(torch.float64), 0.0)
    return correct.sum(dim=1).to(torch.float64) / n, ce.sum(dim=1) / n


def answer_labels(y: torch.Tensor) -> torch.Tensor:
    """The class of each example, ``[rows]``: ``y`` itself, or for per-position labels ``[rows,
    T]`` the answer at the one scored position (modular addition's ``(a + b) mod p``).

    Raises ValueError for sequence labels that score more or fewer than one position per row.
    """
    if y.dim() == 1:
        return y
    scored = y != IGNORE
    if not bool((scored.sum(dim=1) == 1).all()):
        raise ValueError(
            "a class per example needs exactly one scored position per sequence; this task "
            f"scores {int(scored[0].sum())} (use a task answered at one position, such as "
            "modular_addition)"
        )
    return y[scored]


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
