"""What the generated sequence tasks share: random token draws and the split into a Dataset.

The tasks themselves are kinds in their own modules (:mod:`falsify.data.modular_addition`,
:mod:`falsify.data.induction`, :mod:`falsify.data.previous_token`); docs/sequence-models.md.
"""

from __future__ import annotations

import torch
from pydantic import Field

from falsify.data.base import Dataset
from falsify.hypothesis.kinds import DataKind
from falsify.hypothesis.types import Seed

__all__ = ["RandomTokenTask", "random_tokens", "split_tokens"]


class RandomTokenTask(DataKind):
    """The fields of a task on random token sequences: ``vocab`` tokens (BOS is ``vocab``),
    ``n_train + n_test`` sequences drawn from ``split_seed``."""

    vocab: int = Field(32, ge=2)
    n_train: int = Field(2000, ge=1)
    n_test: int = Field(500, ge=1)
    split_seed: Seed = 0


def random_tokens(n: int, length: int, vocab: int, generator: torch.Generator) -> torch.Tensor:
    """``[n, length]`` int64: each row ``length`` distinct tokens of ``0..vocab-1``, uniformly
    drawn (a random permutation's prefix), so every token occurs at most once in a row."""
    keys = torch.rand(n, vocab, generator=generator)
    return keys.argsort(dim=1)[:, :length].contiguous()


def split_tokens(
    name: str, x: torch.Tensor, y: torch.Tensor, n_train: int, n_classes: int
) -> Dataset:
    """The first ``n_train`` rows for training, the rest for testing."""
    return Dataset(
        name=name,
        x_train=x[:n_train].contiguous(),
        y_train=y[:n_train].contiguous(),
        x_test=x[n_train:].contiguous(),
        y_test=y[n_train:].contiguous(),
        n_classes=n_classes,
    )
