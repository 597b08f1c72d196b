"""Activation patching: units of a clean run set to their values on a corrupted input.

For each clean example ``x_i`` with a corrupted partner ``x'_i``, the layer's units in a mask are
replaced by their activations on ``x'_i`` (the corrupted run), the rest of the clean forward runs
on, and the change of the clean loss or accuracy is the unit's effect (Meng et al. 2022, "Locating
and editing factual associations in GPT"; Heimersheim & Nanda 2024, "How to use and interpret
activation patching": patching corrupted into clean, "noising", finds the units whose clean
activations are necessary). Units are read and set through the layer's unit view
(:mod:`falsify.units`), so a head of ``attn.hook_z`` is its whole output, a neuron at a
position view only there.

The patched activations are a per-example fill ``[N, …]``, so the sweep runs in the same engine
as ablation (:func:`falsify.interventions.engine.ablation_sweep`): many units at once, the cached
prefix where exact. Resample ablation is the special case where ``x'_i`` is another example of
the split (:func:`falsify.interventions.ablation.resample_sources`).

The corrupted partner of a token sequence (``corruption``, docs/sequence-models.md, "Patching"):
``resample``, another example of the split, or ``prefix``, the same sequence with every token
before the first scored position replaced by that of another example (so the context an answer
is copied or computed from differs while the scored part is the clean one).
"""

from __future__ import annotations

from typing import ClassVar, Literal

import torch
from torch import nn

from falsify.data.base import IGNORE
from falsify.errors import FalsifyError
from falsify.hooks import capture
from falsify.hypothesis.kinds import UnitEffectKind, register
from falsify.interventions.ablation import (
    Metric,
    n_units,
    resample_sources,
    single_unit_masks,
)
from falsify.interventions.engine import DEFAULT_MAX_BYTES, ablation_sweep, row_stats_correct_ce
from falsify.units import unit_view

__all__ = ["corrupt", "patching_effects"]

Corruption = Literal["resample", "prefix"]


def corrupt(x: torch.Tensor, y: torch.Tensor, corruption: Corruption, seed: int) -> torch.Tensor:
    """The corrupted partner of each clean example of ``x`` ``[N, …]``.

    ``resample``: example ``resample_sources(N, seed)[i]``. ``prefix`` (token data, ``y`` ``[N,
    T]``): row ``i`` with the tokens before its first scored position (labels not
    :data:`IGNORE`) taken from that other example; the scored positions' own tokens stay clean
    (in the induction task, the first copy is replaced and the repeat kept).
    """
    source = resample_sources(len(x), seed).to(x.device)
    other = x[source]
    if corruption == "resample":
        return other
    if x.dim() != 2 or y.shape != x.shape:
        raise FalsifyError(
            "The 'corruption: prefix' of a patching effect must be applied to token sequences "
            f"[N, T] with per-position labels. Got inputs {list(x.shape)} and labels "
            f"{list(y.shape)} instead."
        )
    scored = y != IGNORE  # [N, T]
    first = torch.where(scored.any(dim=1), scored.float().argmax(dim=1), x.shape[1])  # [N]
    before = torch.arange(x.shape[1], device=x.device) < first.unsqueeze(1)  # [N, T]
    return torch.where(before, other, x)


@torch.no_grad()
def patching_effects(
    model: nn.Module,
    layer: str,
    x: torch.Tensor,
    y: torch.Tensor,
    x_corrupted: torch.Tensor,
    masks: torch.Tensor,
    *,
    metric: Metric = "loss_increase",
    batch_size: int = 1024,
    max_rows: int = 1 << 16,
    max_bytes: int = DEFAULT_MAX_BYTES,
) -> torch.Tensor:
    """Effect on the clean ``metric`` of patching each unit group in ``masks`` ``[groups,
    units]`` from the corrupted run ``x_corrupted`` (``[N, …]``, row ``i`` the partner of clean
    row ``i``): ``[groups]``, as :func:`falsify.interventions.ablation.ablation_effects` defines
    ``accuracy_drop`` and ``loss_increase``."""
    if x_corrupted.shape != x.shape:
        raise FalsifyError(
            f"The corrupted inputs must have the clean inputs' shape {list(x.shape)}. "
            f"Got {list(x_corrupted.shape)} instead."
        )
    model.eval()
    unit_view(model, layer)  # refuses a layer that holds no units
    with capture(model, layer) as outs:
        for i in range(0, len(x), batch_size):
            model(x_corrupted[i : i + batch_size])
    patched = torch.cat(outs)  # [N, …]: the corrupted run's layer output, one row per example
    res = ablation_sweep(
        model,
        layer,
        x,
        y,
        masks.to(device=x.device, dtype=torch.bool),
        patched,
        row_stats=row_stats_correct_ce,
        batch_size=batch_size,
        max_rows=max_rows,
        max_bytes=max_bytes,
    )
    column = 0 if metric == "accuracy_drop" else 1
    change = (res.ablated.cpu()[:, column] - res.intact.cpu()[column]) / len(x)
    return (-change if metric == "accuracy_drop" else change).to(torch.float32)


@register
class UnitPatchingEffect(UnitEffectKind):
    """Damage done to the clean run by patching each unit from a corrupted input."""

    kind: Literal["unit_patching"]
    corruption: Corruption = "prefix"
    seed: int = 0
    metric: Metric = "loss_increase"

    label: ClassVar[str] = "activation patching"
    docs: ClassVar[str] = "docs/sequence-models.md"
    example: ClassVar[dict[str, object]] = {"corruption": "resample"}  # any data; prefix: tokens

    def describe(self) -> str:
        return f"{self.metric.replace('_', ' ')} when patched from a corrupted input"

    def effects(
        self, model: nn.Module, layer: str, x: torch.Tensor, y: torch.Tensor
    ) -> torch.Tensor:
        masks = single_unit_masks(n_units(model, layer, x), device=x.device)
        x_bad = corrupt(x, y, self.corruption, self.seed)
        return patching_effects(model, layer, x, y, x_bad, masks, metric=self.metric)
