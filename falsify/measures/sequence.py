"""Model-level outcomes of sequence models (docs/sequence-models.md), each a registered kind.

- ``loss``: the mean cross-entropy at the scored positions (of a classifier: over examples);
- ``logit_difference``: the mean, over scored positions, of the correct answer's logit minus that
  of a chosen wrong answer, ``(answer + wrong_offset) mod n_classes``;
- ``fourier_power_share``: the share of a token embedding's Fourier power that lies in its
  ``top_k`` strongest frequencies (Nanda et al. 2023, "Progress measures for grokking via
  mechanistic interpretability": a modular-addition transformer embeds ``a`` through a few
  frequencies ``cos(2πka/p)``, ``sin(2πka/p)``).
"""

from __future__ import annotations

from typing import ClassVar, Literal

import torch
from pydantic import Field

from falsify.data.base import IGNORE
from falsify.errors import FalsifyError
from falsify.hooks import get_layer
from falsify.hypothesis.kinds import OutcomeKind, register
from falsify.hypothesis.types import Split
from falsify.measures.model_level import TrainedModel

__all__ = ["FourierPowerShare", "LogitDifference", "SequenceLoss", "fourier_power_share"]


class _SequenceOutcome(OutcomeKind):
    docs: ClassVar[str] = "docs/sequence-models.md"

    def describe(self) -> str:
        split = getattr(self, "split", None)
        return f"{split} {self.label}" if split else self.label


@register
class SequenceLoss(_SequenceOutcome):
    """Mean cross-entropy at the scored positions (over examples for a classifier)."""

    kind: Literal["loss"]
    split: Split = "test"

    label: ClassVar[str] = "loss"
    streams: ClassVar[bool] = True

    def compute(self, t: TrainedModel) -> float:
        return t.example_scores(self.split)[1].mean().item()


@register
class LogitDifference(_SequenceOutcome):
    """Mean logit of the correct answer minus that of ``(answer + wrong_offset) mod classes``."""

    kind: Literal["logit_difference"]
    wrong_offset: int = Field(1, ge=1)
    split: Split = "test"

    label: ClassVar[str] = "logit difference"
    needs_sequences: ClassVar[bool] = True

    @torch.no_grad()
    def compute(self, t: TrainedModel) -> float:
        x, y = t.split(self.split)
        t.model.eval()
        return logit_difference(t.model(x), y, self.wrong_offset).item()


def logit_difference(logits: torch.Tensor, y: torch.Tensor, wrong_offset: int) -> torch.Tensor:
    """Mean over scored positions (or examples) of ``logit[y] − logit[(y + offset) mod C]``."""
    if logits.dim() == 2:
        logits, y = logits.unsqueeze(1), y.unsqueeze(1)
    scored = y != IGNORE
    right = y[scored]
    rows = logits[scored]  # [scored positions, classes]
    wrong = (right + wrong_offset) % rows.shape[-1]
    picked = rows.gather(1, torch.stack([right, wrong], dim=1))
    return (picked[:, 0] - picked[:, 1]).to(torch.float64).mean()


def fourier_power_share(embedding: torch.Tensor, top_k: int) -> torch.Tensor:
    """Share of the power of ``embedding`` ``[p, d]`` (one row per token ``0..p-1``) in its
    ``top_k`` strongest frequencies.

    The discrete Fourier transform over the token axis gives ``F_k`` ``[d]``; frequency ``k``
    (``1 ≤ k ≤ p // 2``) has power ``|F_k|² + |F_{p−k}|²`` (once when ``k = p − k``), so a
    cosine and sine pair is one frequency. The constant ``k = 0`` (the mean embedding) carries
    nothing about which token it is, and is left out of the total.
    """
    p = embedding.shape[0]
    power = torch.fft.fft(embedding.to(torch.float64), dim=0).abs().pow(2).sum(dim=1)  # [p]
    ks = torch.arange(1, p // 2 + 1)
    per_freq = power[ks] + torch.where(ks != p - ks, power[(p - ks) % p], 0.0)
    total = per_freq.sum()
    if total <= 0:
        return torch.tensor(0.0, dtype=torch.float64)
    return per_freq.topk(min(top_k, len(per_freq))).values.sum() / total


@register
class FourierPowerShare(_SequenceOutcome):
    """Share of the token embedding's Fourier power in its ``top_k`` frequencies (Nanda et al.
    2023), over the rows of the answer tokens ``0..n_classes-1`` (``p`` for modular addition)."""

    kind: Literal["fourier_power_share"]
    top_k: int = Field(5, ge=1)
    embedding: str = "embed"  # the nn.Embedding (or weight-holding module) of the tokens

    label: ClassVar[str] = "Fourier power share of the embedding"
    streams: ClassVar[bool] = True  # reads the embedding weights, never the data
    needs_sequences: ClassVar[bool] = True

    def describe(self) -> str:
        return f"embedding power in top {self.top_k} frequencies"

    @torch.no_grad()
    def compute(self, t: TrainedModel) -> float:
        module = get_layer(t.model, self.embedding)
        weight = getattr(module, "weight", None)
        if not isinstance(weight, torch.Tensor) or weight.dim() != 2:
            raise FalsifyError(
                f"The 'embedding' of fourier_power_share must name a module with a weight "
                f"[tokens, d_model]. Got {self.embedding!r} ({type(module).__name__}) instead."
            )
        n = t.data.n_classes
        return fourier_power_share(weight[:n].detach().cpu(), self.top_k).item()
