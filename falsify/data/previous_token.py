"""Copy the previous token: the task one previous-token head solves (its known structure).

Each example is ``[BOS, s_1 … s_{T-1}]`` with distinct random tokens of ``0..vocab-1`` (BOS is
token ``vocab``); at every position ``t ≥ 2`` the answer is the token at ``t - 1``
(docs/sequence-models.md).
"""

from __future__ import annotations

from typing import ClassVar, Literal

import torch
from pydantic import Field, model_validator

from falsify.data.base import IGNORE, Dataset
from falsify.data.tokens import RandomTokenTask, random_tokens, split_tokens
from falsify.hypothesis.kinds import register

__all__ = ["PreviousTokenTask", "load_previous_token"]


@register
class PreviousTokenTask(RandomTokenTask):
    """``[BOS, s_1 …]`` with the previous token as each position's answer (from position 2)."""

    kind: Literal["previous_token"]
    length: int = Field(12, ge=3)  # T, BOS included

    label: ClassVar[str] = "previous-token copying"
    docs: ClassVar[str] = "docs/sequence-models.md"

    @model_validator(mode="after")
    def _distinct_tokens(self) -> PreviousTokenTask:
        if self.length - 1 > self.vocab:
            raise ValueError(
                f"length at most vocab + 1 ({self.vocab + 1}): its tokens are distinct"
            )
        return self

    def load(self) -> Dataset:
        return load_previous_token(self)


def load_previous_token(spec: PreviousTokenTask) -> Dataset:
    """``x`` ``[n, T]``; ``y[:, t] = x[:, t-1]`` for ``t ≥ 2``, IGNORE at positions 0 and 1."""
    n = spec.n_train + spec.n_test
    g = torch.Generator().manual_seed(spec.split_seed)
    s = random_tokens(n, spec.length - 1, spec.vocab, g)
    x = torch.cat([torch.full((n, 1), spec.vocab, dtype=torch.long), s], dim=1)
    y = torch.full_like(x, IGNORE)
    y[:, 2:] = x[:, 1:-1]
    return split_tokens("previous_token", x, y, spec.n_train, spec.vocab)
