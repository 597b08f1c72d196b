"""Modular addition ``a + b mod p`` as a sequence task (Nanda et al. 2023, "Progress measures
for grokking via mechanistic interpretability").

Every pair ``(a, b)`` of ``0..p-1`` is one example ``[a, b, =]`` (``=`` is token ``p``); the answer
``(a + b) mod p`` is scored at the last position only. A fraction of the ``p²`` pairs, drawn by
``split_seed``, is the training set; the rest is the test set (docs/sequence-models.md).
"""

from __future__ import annotations

from typing import ClassVar, Literal

import torch
from pydantic import Field

from falsify.data.base import IGNORE, Dataset
from falsify.data.tokens import split_tokens
from falsify.hypothesis.kinds import DataKind, register
from falsify.hypothesis.types import Seed

__all__ = ["ModularAddition", "load_modular_addition"]


@register
class ModularAddition(DataKind):
    """``[a, b, =]`` → ``(a + b) mod p`` at the last position, every pair once."""

    kind: Literal["modular_addition"]
    p: int = Field(53, ge=2)
    train_fraction: float = Field(0.3, gt=0.0, lt=1.0)
    split_seed: Seed = 0

    label: ClassVar[str] = "modular addition (a + b mod p)"
    docs: ClassVar[str] = "docs/sequence-models.md"

    def load(self) -> Dataset:
        return load_modular_addition(self)


def load_modular_addition(spec: ModularAddition) -> Dataset:
    """``x`` ``[p², 3]`` = ``[a, b, p]``; ``y`` ``[p², 3]`` = ``[IGNORE, IGNORE, (a + b) mod p]``,
    rows in an order drawn from ``split_seed``; ``round(train_fraction · p²)`` train rows."""
    p = spec.p
    a, b = torch.cartesian_prod(torch.arange(p), torch.arange(p)).unbind(dim=1)
    x = torch.stack([a, b, torch.full_like(a, p)], dim=1)
    y = torch.full_like(x, IGNORE)
    y[:, -1] = (a + b) % p
    order = torch.randperm(p * p, generator=torch.Generator().manual_seed(spec.split_seed))
    n_train = min(max(round(spec.train_fraction * p * p), 1), p * p - 1)
    return split_tokens("modular_addition", x[order], y[order], n_train, p)
