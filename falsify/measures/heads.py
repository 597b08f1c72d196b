"""Per-head attention scores (Olsson et al. 2022, "In-context learning and induction heads").

Each is a per-unit measure of a head layer, ``blocks.{i}.attn.hook_z`` (the heads are its units,
docs/sequence-models.md), computed from the attention probabilities of the same block, its
sibling hook point ``blocks.{i}.attn.hook_pattern`` ``[b, heads, query, key]``:

- previous-token score: the mean attention from each position ``t ≥ 1`` to ``t − 1``;
- prefix-matching score: on the split's inputs, the attention from each position ``t`` to the
  positions ``s + 1 ≤ t`` right after earlier occurrences ``s < t`` of its token (summed over
  them), averaged over the positions whose token occurred before;
- induction score: the prefix-matching attention on repeated random tokens the measure draws
  itself, ``[BOS, r_1..r_L, r_1..r_L]``: the mean attention from each second-half position
  ``L + j`` to ``j + 1``, the token after the first copy of its token (the score TransformerLens
  users compute; independent of the task the model was trained on).
"""

from __future__ import annotations

from typing import ClassVar, Literal

import torch
from pydantic import Field
from torch import nn

from falsify.data.tokens import random_tokens
from falsify.errors import FalsifyError
from falsify.hooks import capture, get_layer
from falsify.hypothesis.kinds import UnitMeasureKind, register
from falsify.hypothesis.types import Seed

__all__ = [
    "InductionScore",
    "PrefixMatchingScore",
    "PreviousTokenScore",
    "attention_pattern",
    "induction_score",
    "prefix_matching_score",
    "previous_token_score",
]


@torch.no_grad()
def attention_pattern(model: nn.Module, layer: str, x: torch.Tensor) -> torch.Tensor:
    """The attention probabilities ``[b, heads, query, key]`` of the heads of ``layer``
    (``….attn.hook_z``), read at the sibling hook point ``….attn.hook_pattern``."""
    parent, _, leaf = layer.rpartition(".")
    pattern = f"{parent}.hook_pattern"
    if leaf != "hook_z" or pattern not in dict(model.named_modules()):
        raise FalsifyError(
            f"The 'layer' of a head score must be a head layer blocks.<i>.attn.hook_z with a "
            f"hook_pattern beside it (docs/sequence-models.md). Got {layer!r} instead."
        )
    get_layer(model, layer)
    model.eval()
    with capture(model, pattern) as outs:
        model(x)
    return outs[0]


def previous_token_score(pattern: torch.Tensor) -> torch.Tensor:
    """``[heads]``: mean of ``pattern[:, h, t, t-1]`` over examples and ``t ≥ 1``."""
    return pattern.diagonal(offset=-1, dim1=-2, dim2=-1).mean(dim=(0, 2))


def prefix_matching_score(pattern: torch.Tensor, tokens: torch.Tensor) -> torch.Tensor:
    """``[heads]``: attention from ``t`` to every ``s + 1`` with ``tokens[s] == tokens[t]``,
    ``s < t``, summed, then averaged over the ``(example, t)`` that have such an ``s``."""
    same = tokens.unsqueeze(2) == tokens.unsqueeze(1)  # [b, query t, s]
    earlier = same.tril(diagonal=-1)
    # The key after s: shift the earlier-occurrence mask one key to the right.
    keys = torch.zeros_like(earlier)
    keys[:, :, 1:] = earlier[:, :, :-1]
    has = earlier.any(dim=2)  # [b, t]
    if not bool(has.any()):
        raise FalsifyError(
            "A prefix-matching score needs inputs in which some token repeats; this split has "
            "none (use induction_score, which draws repeated tokens itself)."
        )
    per_query = (pattern * keys.unsqueeze(1)).sum(dim=-1)  # [b, heads, t]
    return (per_query * has.unsqueeze(1)).sum(dim=(0, 2)) / has.sum()


def induction_score(pattern: torch.Tensor, half: int) -> torch.Tensor:
    """``[heads]``: on ``[BOS, r, r]`` with ``len(r) = half``, the mean attention from position
    ``half + j`` to ``j + 1`` (``j = 1..half``)."""
    q = torch.arange(half + 1, 2 * half + 1)
    return pattern[:, :, q, q - half + 1].mean(dim=(0, 2))


class _HeadScore(UnitMeasureKind):
    docs: ClassVar[str] = "docs/sequence-models.md"
    needs_sequences: ClassVar[bool] = True


@register
class PreviousTokenScore(_HeadScore):
    """Mean attention of each head to the previous position, on the split's inputs."""

    kind: Literal["previous_token_score"]

    label: ClassVar[str] = "previous-token score"

    def measure(
        self, model: nn.Module, layer: str, x: torch.Tensor, y: torch.Tensor, n_classes: int
    ) -> torch.Tensor:
        return previous_token_score(attention_pattern(model, layer, x))


@register
class PrefixMatchingScore(_HeadScore):
    """Attention of each head to the token after earlier copies of the current token."""

    kind: Literal["prefix_matching_score"]

    label: ClassVar[str] = "prefix-matching score"

    def measure(
        self, model: nn.Module, layer: str, x: torch.Tensor, y: torch.Tensor, n_classes: int
    ) -> torch.Tensor:
        return prefix_matching_score(attention_pattern(model, layer, x), x)


@register
class InductionScore(_HeadScore):
    """Prefix-matching attention of each head on repeated random tokens it draws itself."""

    kind: Literal["induction_score"]
    half: int | None = Field(None, ge=2)  # None: as long as the inputs allow, (T - 1) // 2
    n: int = Field(200, ge=1)  # sequences drawn
    seed: Seed = 0  # fixes the drawn sequences

    label: ClassVar[str] = "induction score"

    def measure(
        self, model: nn.Module, layer: str, x: torch.Tensor, y: torch.Tensor, n_classes: int
    ) -> torch.Tensor:
        half = self.half or (x.shape[1] - 1) // 2
        if half < 2 or half > n_classes:
            raise FalsifyError(
                f"The 'half' of induction_score must lie in 2..{n_classes} (distinct tokens of "
                f"the model's {n_classes}). Got {half} instead."
            )
        r = random_tokens(self.n, half, n_classes, torch.Generator().manual_seed(self.seed))
        bos = torch.full((self.n, 1), n_classes, dtype=torch.long)
        tokens = torch.cat([bos, r, r], dim=1).to(x.device)
        return induction_score(attention_pattern(model, layer, tokens), half)
