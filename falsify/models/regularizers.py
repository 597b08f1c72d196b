"""Training-time regularizers: terms added to the cross-entropy loss on every mini-batch.

A term is any object with a ``name``, the ``layers`` whose outputs it reads, and a call
``term(model, activations, labels) -> scalar`` whose value is added to the loss. The training
loop captures the (not detached) outputs of every layer some term names, once per forward
pass, and passes them as ``{layer: tensor}``. Each term is built by its regularizer kind
(:class:`falsify.hypothesis.kinds.RegularizerKind`, a block of ``training``) while the kind is
active, so an unregularized recipe trains exactly as plain cross-entropy does. This module
holds the class selectivity regularizer (:class:`Selectivity`); the enmeshment loss of
Golechha et al. (2024) is :mod:`falsify.models.enmeshment`. Kinds also receive the number of
optimizer steps per epoch (for terms with a schedule, such as the enmeshment re-clustering).
A kind with a ``window`` of epochs (:class:`falsify.hypothesis.kinds.RegularizerKind`) has its
term added in those epochs only (:func:`scheduled_terms`); one with an empty window is not
built, so it trains exactly as the term switched off.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from functools import partial
from typing import Any, ClassVar, Literal, Protocol

import torch
from pydantic import Field
from torch import nn

from falsify.data.base import IGNORE, answer_labels
from falsify.data.stream import is_stream, model_batches
from falsify.errors import FalsifyError, LocatedError
from falsify.hooks import hooked
from falsify.hypothesis.kinds import RegularizerKind, register
from falsify.hypothesis.schema import TrainingSpec
from falsify.hypothesis.types import UnitLayers
from falsify.selectivity import mean_selectivity, selectivity_index
from falsify.units import CHANNELS, UnitView, default_layers, unit_view

__all__ = [
    "RegularizerTerm",
    "Selectivity",
    "SelectivityTerm",
    "batch_selectivity",
    "build_regularizers",
    "captured_activations",
    "scheduled_terms",
    "stacked_batch_selectivity",
]


class RegularizerTerm(Protocol):
    """What the training loop needs of a regularizer."""

    @property
    def name(self) -> str: ...

    @property
    def layers(self) -> tuple[str, ...]: ...

    def __call__(
        self, model: nn.Module, activations: Mapping[str, torch.Tensor], labels: torch.Tensor
    ) -> torch.Tensor: ...


def batch_selectivity(
    act: torch.Tensor,
    labels: torch.Tensor,
    n_classes: int,
    epsilon: float = 1e-7,
    view: UnitView = CHANNELS,
) -> torch.Tensor:
    """Mean class selectivity index of a layer's units on one mini-batch, differentiably.

    ``act`` is the layer's output, read as ``[batch, units]`` through its unit ``view``
    (:mod:`falsify.units`); ``labels`` are classes ``[batch]``, or a sequence task's labels
    ``[batch, T]`` with one scored position (its answer is the class); the class-conditional means are taken over the classes present in
    the batch, as in Leavitt & Morcos (2021), and fed to
    :func:`falsify.selectivity.selectivity_index`. A batch with fewer than two classes has no
    selectivity and contributes 0.
    """
    labels = answer_labels(labels)  # a sequence task's answer at its one scored position
    per_unit = view.read(act)  # [batch, units]
    counts = torch.bincount(labels, minlength=n_classes)
    present = counts > 0
    if int(present.sum()) < 2:
        return per_unit.sum() * 0.0
    sums = torch.zeros(n_classes, per_unit.shape[1], dtype=per_unit.dtype, device=act.device)
    sums = sums.index_add(0, labels, per_unit)
    means = sums[present] / counts[present].to(per_unit.dtype)[:, None]  # [classes, units]
    return selectivity_index(means, epsilon).mean()


def stacked_batch_selectivity(
    per_unit: torch.Tensor, labels: torch.Tensor, n_classes: int, epsilon: float = 1e-7
) -> torch.Tensor:
    """:func:`batch_selectivity` of S replicates at once: ``per_unit`` ``[S, batch, units]``
    (each replicate's layer read as ``[batch, units]``), ``labels`` ``[S, batch]`` → ``[S]``.

    Each replicate's classes absent from its batch are left out of its maximum and its mean of
    the other classes, as :func:`batch_selectivity` leaves them out; a replicate with fewer
    than two classes gets 0 and no gradient. Whether this sums in :func:`batch_selectivity`'s
    order is the backend's business: the ensemble trainer probes it before it uses it
    (:func:`falsify.models.ensemble.train_ensemble`).
    """
    s, b, units = per_unit.shape
    labels = torch.stack([answer_labels(y) for y in labels])
    offset = (labels + n_classes * torch.arange(s, device=labels.device)[:, None]).flatten()
    counts = torch.bincount(offset, minlength=s * n_classes).view(s, n_classes)
    present = counts > 0
    n_present = present.sum(dim=1)  # [S]
    sums = torch.zeros(s * n_classes, units, dtype=per_unit.dtype, device=per_unit.device)
    sums = sums.index_add(0, offset, per_unit.reshape(s * b, units)).view(s, n_classes, units)
    means = sums / counts.clamp(min=1).to(per_unit.dtype)[:, :, None]  # absent classes: 0
    # Each replicate's present classes first, in class order, as batch_selectivity's
    # means[present] has them: its sums then see the same values in the same places, and the
    # absent classes' zeros after them (how a reduction over few classes is split among
    # accumulators depends on where its values sit).
    order = torch.argsort((~present).to(torch.int8), dim=1, stable=True)
    means = means.gather(1, order[:, :, None].expand(-1, -1, units))
    present = present.gather(1, order)
    mu_max = means.masked_fill(~present[:, :, None], float("-inf")).max(dim=1).values
    rest = (n_present - 1).clamp(min=1).to(per_unit.dtype)[:, None]
    mu_rest = (means.sum(dim=1) - mu_max) / rest
    si = ((mu_max - mu_rest) / (mu_max + mu_rest + epsilon)).mean(dim=1)
    return torch.where(n_present >= 2, si, torch.zeros_like(si))


@dataclass(frozen=True)
class SelectivityTerm:
    """−α · mean over ``layers`` of the mean SI over units (Leavitt & Morcos 2021, PRODUCT §6).

    α > 0 rewards class selectivity, α < 0 penalizes it.
    """

    alpha: float
    layers: tuple[str, ...]
    n_classes: int
    epsilon: float = 1e-7
    name: str = "selectivity"

    def __call__(
        self, model: nn.Module, activations: Mapping[str, torch.Tensor], labels: torch.Tensor
    ) -> torch.Tensor:
        si = torch.stack(
            [
                batch_selectivity(
                    activations[layer],
                    labels,
                    self.n_classes,
                    self.epsilon,
                    unit_view(model, layer),
                )
                for layer in self.layers
            ]
        )
        return -self.alpha * si.mean()

    def stacked(self, outputs: Mapping[str, torch.Tensor], labels: torch.Tensor) -> torch.Tensor:
        """The term of S replicates at once, ``[S]``, from each layer's units as its unit view
        reads them, ``[S, batch, units]`` (:meth:`falsify.models.stacked.StackedNet.unit_rows`:
        a dense layer's outputs as they are, a conv layer's channels averaged over space), and
        labels ``[S, batch]``."""
        si = torch.stack(
            [
                stacked_batch_selectivity(outputs[layer], labels, self.n_classes, self.epsilon)
                for layer in self.layers
            ],
            dim=1,
        )
        return -self.alpha * si.mean(dim=1)


@register
class Selectivity(RegularizerKind):
    """``training.selectivity``: loss = CE − α · mean SI over ``layers`` (Leavitt & Morcos 2021).

    α < 0 discourages class selectivity, α > 0 rewards it, 0 (the default) is off. Empty
    ``layers`` means every unit layer of the model.
    """

    kind: Literal["selectivity"] = Field("selectivity", exclude=True)
    alpha: float = 0.0
    layers: UnitLayers = ()

    label: ClassVar[str] = "class selectivity regularizer"
    docs: ClassVar[str] = "docs/between-conditions.md"
    metric: ClassVar[str] = "mean_selectivity"
    streams: ClassVar[bool] = True
    ensemble: ClassVar[bool] = True  # its term reads activations and labels only
    example: ClassVar[dict[str, Any]] = {"alpha": -1.0, "layers": ["hidden1"]}
    legacy_fields: ClassVar[dict[str, str]] = {
        "selectivity_alpha": "alpha",
        "selectivity_layers": "layers",
    }

    @property
    def active(self) -> bool:
        return self.alpha != 0

    def describe(self) -> str:
        return f"{self.label} (α = {self.alpha:g})"

    def check(self, model: nn.Module, loc: tuple[str | int, ...]) -> None:
        try:
            default_layers(model, self.layers)
        except FalsifyError:
            raise LocatedError(
                (*loc, "layers"), "named (the model declares no unit layers)", list(self.layers)
            ) from None

    def check_data(self, data: Any, loc: tuple[str | int, ...]) -> None:
        """Before training: a class per training example (a sequence task scores one
        position, whose answer is the class)."""
        try:
            answer_labels(data.y_train)
        except ValueError:
            scored = int((data.y_train[0] != IGNORE).sum())
            raise LocatedError(
                loc,
                "off for a task without a class per example (this one scores "
                f"{scored} positions per sequence; a sequence task scored at one position, "
                "such as modular_addition, has one)",
                self.model_dump(exclude_defaults=True),
            ) from None

    def build(self, model: nn.Module, n_classes: int, steps_per_epoch: int) -> SelectivityTerm:
        return SelectivityTerm(self.alpha, default_layers(model, self.layers), n_classes)

    def achieved(
        self, model: nn.Module, x: torch.Tensor, y: torch.Tensor, n_classes: int
    ) -> dict[str, float]:
        """The mean class selectivity of ``layers`` on ``(x, y)``; {} for a model that declares
        no unit layers and names none."""
        try:
            layers = default_layers(model, self.layers)
        except FalsifyError:
            return {}
        if is_stream(x):  # a streamed split: read in batches, once per layer
            return {
                self.metric: mean_selectivity(
                    model, layers, partial(model_batches, model, x, y), None, n_classes
                )
            }
        return {self.metric: mean_selectivity(model, layers, x, answer_labels(y), n_classes)}

    def recipe(self) -> dict[str, Any]:
        # The flat names the cache recipe has always used, on or off, so keys stay as they were.
        return {"selectivity_alpha": self.alpha, "selectivity_layers": list(self.layers)}


def scheduled_terms(
    spec: TrainingSpec, model: nn.Module, n_classes: int, steps_per_epoch: int = 1
) -> list[tuple[RegularizerKind, RegularizerTerm]]:
    """Each regularizer of the recipe that is ever on (active, its window not empty), with its
    term, in field order; ``kind.on_in_epoch(epoch)`` says in which epochs to add the term."""
    return [
        (r, r.build(model, n_classes, steps_per_epoch)) for r in spec.regularizers() if r.trains
    ]


def build_regularizers(
    spec: TrainingSpec, model: nn.Module, n_classes: int, steps_per_epoch: int = 1
) -> list[RegularizerTerm]:
    """The terms of the recipe's regularizers that are ever on, in field order."""
    return [term for _, term in scheduled_terms(spec, model, n_classes, steps_per_epoch)]


@contextmanager
def captured_activations(
    model: nn.Module, layers: Sequence[str]
) -> Iterator[dict[str, torch.Tensor]]:
    """Within the block, the returned dict holds each layer's output of the latest forward.

    The outputs keep their autograd history, so a loss built from them trains the model. The
    hooks are removed on exit, even after an error.
    """
    latest: dict[str, torch.Tensor] = {}

    def keeper(name: str):
        def keep(_m: nn.Module, _i: Any, out: torch.Tensor) -> None:
            latest[name] = out

        return keep

    with hooked(model, {name: keeper(name) for name in dict.fromkeys(layers)}):
        yield latest
