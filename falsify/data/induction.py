"""Repeated random tokens: the in-context copying task that induction heads solve (Olsson et
al. 2022, "In-context learning and induction heads").

Each example is ``[BOS, s_1 … s_L, s_1 … s_L, f …]``: ``s`` is ``L`` distinct random tokens of
``0..vocab-1`` (BOS is token ``vocab``), repeated once, and ``f`` random filler tokens that pad
every example to ``2 · half + 1`` tokens; all tokens of a row are distinct. ``L`` is ``half``, or
with ``min_half`` drawn per example from ``min_half..half``, so the copy distance varies and only
matching content (not a fixed relative position) finds what to copy. The next token is scored at
each position of the repeated half whose token has been seen before and whose successor is
known, i.e. the positions ``L+1 … 2L-1`` (predicting ``s_2 … s_L``) (docs/sequence-models.md).
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
    half: int = Field(8, ge=2)  # L, the length of the repeated sequence (its largest)
    min_half: int | None = Field(None, ge=2)  # None: every L is half; else drawn per example

    label: ClassVar[str] = "induction (repeated random tokens)"
    docs: ClassVar[str] = "docs/sequence-models.md"

    @model_validator(mode="after")
    def _distinct_tokens(self) -> InductionTask:
        shortest = self.half if self.min_half is None else self.min_half
        if shortest > self.half:
            raise ValueError(f"min_half at most half ({self.half})")
        if 2 * self.half - shortest > self.vocab:
            raise ValueError(
                f"half at most vocab ({self.vocab}) and 2 · half − min_half too: a row's tokens "
                "are distinct"
            )
        return self

    def load(self) -> Dataset:
        return load_induction(self)


def load_induction(spec: InductionTask) -> Dataset:
    """``x`` ``[n, 2·half+1]``; ``y[:, t] = x[:, t+1]`` for ``t`` in ``L+1 … 2L-1``, IGNORE
    elsewhere (``L`` per row)."""
    n, half = spec.n_train + spec.n_test, spec.half
    g = torch.Generator().manual_seed(spec.split_seed)
    shortest = half if spec.min_half is None else spec.min_half
    tokens = random_tokens(n, 2 * half - shortest, spec.vocab, g)
    lengths = torch.randint(shortest, half + 1, (n,), generator=g) if shortest < half else None
    x = torch.full((n, 2 * half + 1), spec.vocab, dtype=torch.long)
    y = torch.full_like(x, IGNORE)
    for i in range(n):
        length = half if lengths is None else int(lengths[i])
        s, filler = tokens[i, :length], tokens[i, length : length + 2 * (half - length)]
        x[i, 1:] = torch.cat([s, s, filler])
        y[i, length + 1 : 2 * length] = x[i, length + 2 : 2 * length + 1]
    return split_tokens("induction", x, y, spec.n_train, spec.vocab)
