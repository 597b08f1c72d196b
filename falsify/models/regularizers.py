"""Training-time regularizers: terms added to the cross-entropy loss on every mini-batch.

A term is any object with a ``name``, the ``layers`` whose outputs it reads, and a call
``term(model, activations, labels) -> scalar`` whose value is added to the loss. The training
loop captures the (not detached) outputs of every layer some term names, once per forward
pass, and passes them as ``{layer: tensor}``. Terms are built from the training recipe by the
builders in :data:`REGULARIZERS`; a builder returns ``None`` when its term is switched off
(e.g. α = 0), so an unregularized recipe trains exactly as plain cross-entropy does. A new
term is one more builder, e.g. the enmeshment loss of Golechha et al. (2024) in
:mod:`falsify.models.enmeshment`. Builders also receive the number of optimizer steps per epoch
(for terms with a schedule, such as the enmeshment term's re-clustering).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, Protocol

import torch
from torch import nn

from falsify.hooks import hooked
from falsify.hypothesis.schema import TrainingSpec
from falsify.models.enmeshment import EnmeshmentTerm
from falsify.selectivity import selectivity_index
from falsify.units import CHANNELS, UnitView, default_layers, unit_view

__all__ = [
    "REGULARIZERS",
    "EnmeshmentTerm",
    "RegularizerTerm",
    "SelectivityTerm",
    "batch_selectivity",
    "build_regularizers",
    "captured_activations",
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
    (:mod:`falsify.units`); the class-conditional means are taken over the classes present in
    the batch, as in Leavitt & Morcos (2021), and fed to
    :func:`falsify.selectivity.selectivity_index`. A batch with fewer than two classes has no
    selectivity and contributes 0.
    """
    per_unit = view.read(act)  # [batch, units]
    counts = torch.bincount(labels, minlength=n_classes)
    present = counts > 0
    if int(present.sum()) < 2:
        return per_unit.sum() * 0.0
    sums = torch.zeros(n_classes, per_unit.shape[1], dtype=per_unit.dtype, device=act.device)
    sums = sums.index_add(0, labels, per_unit)
    means = sums[present] / counts[present].to(per_unit.dtype)[:, None]  # [classes, units]
    return selectivity_index(means, epsilon).mean()


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


def _selectivity(
    spec: TrainingSpec, model: nn.Module, n_classes: int, steps_per_epoch: int
) -> SelectivityTerm | None:
    if spec.selectivity_alpha == 0:
        return None
    layers = default_layers(model, spec.selectivity_layers)
    return SelectivityTerm(spec.selectivity_alpha, tuple(layers), n_classes)


def _enmeshment(
    spec: TrainingSpec, model: nn.Module, n_classes: int, steps_per_epoch: int
) -> EnmeshmentTerm | None:
    if spec.enmeshment_lambda == 0:
        return None
    layers = default_layers(model, spec.enmeshment_layers)
    every = spec.enmeshment_recluster_every or max(steps_per_epoch, 1)
    return EnmeshmentTerm(spec.enmeshment_lambda, tuple(layers), spec.enmeshment_k, every)


# name -> builder(training recipe, model, n_classes, steps per epoch) -> term, or None when off
REGULARIZERS: dict[str, Callable[[TrainingSpec, nn.Module, int, int], Any]] = {
    "selectivity": _selectivity,
    "enmeshment": _enmeshment,
}


def build_regularizers(
    spec: TrainingSpec, model: nn.Module, n_classes: int, steps_per_epoch: int = 1
) -> list[RegularizerTerm]:
    """The active terms of a recipe, in registry order."""
    terms = (build(spec, model, n_classes, steps_per_epoch) for build in REGULARIZERS.values())
    return [t for t in terms if t is not None]


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
