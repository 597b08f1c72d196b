"""Repeated random tokens: the in-context copying task that induction heads solve (Olsson et
al. 2022, "In-context learning and induction heads").

Each example is ``[BOS, s_1 … s_L, s_1 … s_L]`` with ``s`` ``L`` distinct random tokens of
``0..vocab-1`` (BOS is token ``vocab``). The next token is scored at each position of the
repeated half whose token has been seen before and whose successor is known, i.e. the positions
``L+1 … 2L-1`` (predicting ``s_2 … s_L``): only copying from the first half can predict them
(docs/sequence-models.md).
"""

from __future__ import annotations

from typing import ClassVar, Literal

import torch
from pydantic import Field, model_validator

from falsify.data.base import IGNORE, Dataset
from falsify.data.tokens import RandomTokenTask, random_tokens, split_tokens
from falsify.hypothesis.kinds import register

__all__ = ["InductionTask", "load_induction"]


@register
class InductionTask(RandomTokenTask):
    """``[BOS, s, s]`` with ``s`` random distinct tokens; the repeated half's next token scored."""

    kind: Literal["induction"]
    half: int = Field(8, ge=2)  # L, the length of the repeated sequence

    label: ClassVar[str] = "induction (repeated random tokens)"
    docs: ClassVar[str] = "docs/sequence-models.md"

    @model_validator(mode="after")
    def _distinct_tokens(self) -> InductionTask:
        if self.half > self.vocab:
            raise ValueError(f"half at most vocab ({self.vocab}): its tokens are distinct")
        return self

    def load(self) -> Dataset:
        return load_induction(self)


def load_induction(spec: InductionTask) -> Dataset:
    """``x`` ``[n, 2L+1]``; ``y[:, t] = x[:, t+1]`` for ``t`` in ``L+1 … 2L-1``, IGNORE elsewhere."""
    n, length = spec.n_train + spec.n_test, spec.half
    s = random_tokens(n, length, spec.vocab, torch.Generator().manual_seed(spec.split_seed))
    bos = torch.full((n, 1), spec.vocab, dtype=torch.long)
    x = torch.cat([bos, s, s], dim=1)
    y = torch.full_like(x, IGNORE)
    y[:, length + 1 : 2 * length] = x[:, length + 2 :]
    return split_tokens("induction", x, y, spec.n_train, spec.vocab)
