"""Per-class circuits: the fewest units of a layer that keep a class's accuracy when every
other unit of the layer is ablated (docs/modularity-and-attribution.md, "Circuit size").

Golechha, Chaudhary, Velja, Abate & Schoots (2025, arXiv:2502.02470) report that networks
trained with the enmeshment (clusterability) loss "form smaller circuits". Here a *circuit* of
a layer for a set of classes is a set S of its units such that, with every unit outside S set
to the fill (``zero``, ``mean`` or ``resample``, computed on the whole split), the accuracy on
the examples of those classes is at least ``q`` times the intact accuracy on them. It is found
by effect-guided pruning, every step on the ablation engine
(:func:`falsify.interventions.engine.ablation_sweep`):

1. **rank**: each unit's single-unit ablation effect on the classes' cross-entropy (one sweep;
   ties by unit index);
2. **grow**: the retained accuracy of every top-ranked prefix of sizes 0..n in one sweep; the
   smallest prefix that keeps ``q`` is the start;
3. **prune**: greedily, while some unit of S can be dropped with S still keeping ``q``, drop
   the one whose removal keeps the most (one sweep per step, ties: the lowest-ranked unit), so
   the result is 1-minimal: no single unit can be removed (the globally smallest set is a
   subset search the layer's size makes infeasible);
4. **verify**: the set is ablated once more through the plain reference loop
   (:func:`falsify.interventions.ablation.class_ablation_effects` with ``batched=False``: one
   hooked forward of the whole model, none of the engine's shortcuts); a set that fails ``q``
   there is rejected and the next larger candidate (back along the pruning path, then the
   longer prefixes, finally the whole layer) is verified instead.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Annotated, Any, ClassVar, Literal

import numpy as np
import torch
from pydantic import Field
from torch import nn

from falsify.data.base import answer_labels, per_example_scores
from falsify.errors import FalsifyError, LocatedError
from falsify.hypothesis.kinds import OutcomeKind, register
from falsify.hypothesis.types import Seed, Split, UnitLayers
from falsify.hypothesis.units import Fill
from falsify.interventions.ablation import (
    class_ablation_effects,
    fill_values,
    n_units,
    single_unit_masks,
)
from falsify.interventions.engine import ablation_sweep
from falsify.measures.model_level import TrainedModel

__all__ = ["Circuit", "CircuitSizeOutcome", "find_circuit", "first_verified", "verified_retention"]


@dataclass(frozen=True)
class Circuit:
    """A verified circuit of one layer for a set of classes."""

    units: tuple[int, ...]  # the kept units, in rank order
    n_units: int  # the layer's units
    retained: float  # verified accuracy with only ``units`` kept / intact accuracy
    rejected: int  # candidates that failed the verification before this one passed

    @property
    def fraction(self) -> float:
        """The circuit's size as a fraction of the layer's units."""
        return len(self.units) / self.n_units


def _class_rows(y: torch.Tensor, classes: tuple[int, ...]) -> torch.Tensor:
    labels = answer_labels(y)
    return torch.isin(labels, torch.tensor(classes, device=labels.device)).nonzero().flatten()


def _keep_masks(kept: list[list[int]], n: int, device: torch.device) -> torch.Tensor:
    """``[len(kept), n]``: the ablation masks (True = ablated) that keep each set alone."""
    masks = torch.ones(len(kept), n, dtype=torch.bool, device=device)
    for i, units in enumerate(kept):
        masks[i, units] = False
    return masks


@torch.no_grad()
def verified_retention(
    model: nn.Module,
    layer: str,
    x: torch.Tensor,
    y: torch.Tensor,
    classes: tuple[int, ...],
    units: tuple[int, ...],
    n_classes: int,
    value: Fill = "zero",
    seed: int = 0,
) -> float:
    """Accuracy on the examples of ``classes`` with every unit of ``layer`` outside ``units``
    ablated, over the intact accuracy on them: one hooked forward of the whole model (the
    reference loop, ``batched=False``), the fill computed on all of ``x``. NaN when the intact
    accuracy on those classes is 0."""
    model.eval()
    mask = _keep_masks([list(units)], n_units(model, layer, x), x.device)
    drop = class_ablation_effects(
        model, layer, x, y, mask, n_classes, value=value, seed=seed, batched=False
    )[0].double()  # [classes]: intact − ablated accuracy on each class
    labels = answer_labels(y).cpu()
    correct = per_example_scores(model(x), y)[0].cpu().double()  # [N] intact
    sel = list(classes)
    intact = torch.zeros(n_classes, dtype=torch.float64).index_add_(0, labels, correct)[sel]
    counts = torch.bincount(labels, minlength=n_classes).double()[sel]
    base = float(intact.sum())
    if base == 0:
        return float("nan")
    lost = (drop[sel] * counts).nan_to_num(0.0)  # a class with no example loses nothing
    return round(base - float(lost.sum())) / base


def first_verified(
    candidates: list[tuple[int, ...]],
    check: Callable[[tuple[int, ...]], float],
    q: float,
) -> tuple[tuple[int, ...], float, int]:
    """The first candidate whose verified retention ``check(units)`` is at least ``q``, that
    retention, and how many candidates before it were rejected (ValueError if none keeps q)."""
    for i, units in enumerate(candidates):
        retained = check(units)
        if retained >= q:
            return units, retained, i
    raise ValueError(f"none of the {len(candidates)} candidate sets keeps q = {q}")


def _kept_correct(
    model: nn.Module,
    layer: str,
    x: torch.Tensor,
    y: torch.Tensor,
    fill: torch.Tensor,
    kept: list[list[int]],
    n: int,
) -> tuple[float, np.ndarray]:
    """Correct examples of ``x`` intact and with each set of ``kept`` units alone (the engine)."""
    res = ablation_sweep(model, layer, x, y, _keep_masks(kept, n, x.device), fill)
    return float(res.intact[0]), np.rint(res.ablated[:, 0].cpu().numpy())


@torch.no_grad()
def find_circuit(
    model: nn.Module,
    layer: str,
    x: torch.Tensor,
    y: torch.Tensor,
    classes: tuple[int, ...],
    n_classes: int,
    q: float,
    value: Fill = "zero",
    seed: int = 0,
) -> Circuit | None:
    """The verified circuit of ``layer`` for ``classes`` (rank, grow, prune, verify: see the
    module docstring); ``None`` when the split holds no example of them that the intact model
    gets right. ``seed`` fixes the resample fill's draw."""
    model.eval()
    n = n_units(model, layer, x)
    rows = _class_rows(y, classes)
    if len(rows) == 0:
        return None
    fill = fill_values(model, layer, x, value, seed)  # on the whole split, not the class's rows
    if value == "resample":
        fill = fill[rows]
    xc, yc = x[rows], y[rows]
    single = ablation_sweep(model, layer, xc, yc, single_unit_masks(n, x.device), fill)
    loss_rise = (single.ablated[:, 1] - single.intact[1]).cpu()
    order = torch.sort(-loss_rise, stable=True).indices.tolist()  # most damaging first
    rank = {u: i for i, u in enumerate(order)}
    base, prefix_ok = _kept_correct(
        model, layer, xc, yc, fill, [order[:k] for k in range(n + 1)], n
    )
    if base == 0:
        return None
    need = q * base
    start = int(np.flatnonzero(prefix_ok >= need)[0])  # k = n ablates nothing and always keeps q
    path = [list(order[:start])]
    while path[-1]:
        kept = path[-1]
        trials = [[v for v in kept if v != u] for u in kept]
        _, ok = _kept_correct(model, layer, xc, yc, fill, trials, n)
        best = max(
            (i for i in range(len(kept)) if ok[i] >= need),
            key=lambda i: (ok[i], rank[kept[i]]),
            default=None,
        )
        if best is None:
            break
        path.append(trials[best])
    candidates = [tuple(units) for units in reversed(path)]  # the smallest first
    candidates += [tuple(order[:k]) for k in range(start + 1, n + 1)]

    def check(units: tuple[int, ...]) -> float:
        return verified_retention(model, layer, x, y, classes, units, n_classes, value, seed)

    units, retained, rejected = first_verified(candidates, check, q)
    return Circuit(units=units, n_units=n, retained=retained, rejected=rejected)


@register
class CircuitSizeOutcome(OutcomeKind):
    """Size of the per-class circuits of the named layers, as a fraction of each layer's units,
    mean over layers and classes (Golechha, Chaudhary, Velja, Abate & Schoots 2025): for each
    class, the fewest units found by effect-guided pruning that keep ``q`` of the class's
    accuracy with every other unit of the layer ablated, verified by that ablation."""

    kind: Literal["circuit_size"]
    layers: UnitLayers = ()  # empty: every unit layer; each layer's circuit on its own
    classes: tuple[Annotated[int, Field(ge=0)], ...] = ()  # empty: every class
    together: bool = False  # one circuit for all of ``classes`` at once, not one per class
    q: float = Field(0.9, gt=0.0, le=1.0)  # the share of the class's accuracy to keep
    value: Fill = "mean"
    split: Split = "test"
    seed: Seed = 0  # fixes the resample fill's draw

    label: ClassVar[str] = "circuit size"
    docs: ClassVar[str] = "docs/modularity-and-attribution.md"
    needs_unit_layers: ClassVar[bool] = True

    def describe(self) -> str:
        return f"{self.split} circuit size (q = {self.q:g})"

    def check_data(self, data: Any, loc: tuple[str | int, ...]) -> None:
        """Before training: every one of ``classes`` is a class of the data."""
        for i, c in enumerate(self.classes):
            if c >= data.n_classes:
                raise LocatedError(
                    (*loc, "classes", i), f"a class of the data (0..{data.n_classes - 1})", c
                )

    def groups(self, n_classes: int) -> list[tuple[int, ...]]:
        """The class sets that each get a circuit."""
        classes = self.classes or tuple(range(n_classes))
        bad = [c for c in classes if c >= n_classes]
        if bad:
            raise FalsifyError(
                f"The 'classes' of the circuit_size outcome must be classes of the data "
                f"(0..{n_classes - 1}). Got {bad[0]} instead."
            )
        return [classes] if self.together else [(c,) for c in classes]

    def circuits(self, t: TrainedModel) -> list[tuple[str, tuple[int, ...], Circuit | None]]:
        """(layer, classes, circuit) for every layer and class set."""
        x, y = t.split(self.split)
        n_classes = t.data.n_classes
        return [
            (
                layer,
                group,
                find_circuit(t.model, layer, x, y, group, n_classes, self.q, self.value, self.seed),
            )
            for layer in t.layers(self.layers)
            for group in self.groups(n_classes)
        ]

    def details(self, t: TrainedModel) -> dict[str, float]:
        """``value`` (the mean circuit fraction), the mean circuit size in units, the mean
        verified retained fraction and the number of candidate sets the verification rejected."""
        found = [c for _, _, c in self.circuits(t) if c is not None]
        if not found:
            nan = float("nan")
            return {
                "value": nan,
                "circuit_units": nan,
                "circuit_retained": nan,
                "circuit_rejected": 0.0,
            }
        return {
            "value": float(np.mean([c.fraction for c in found])),
            "circuit_units": float(np.mean([len(c.units) for c in found])),
            "circuit_retained": float(np.mean([c.retained for c in found])),
            "circuit_rejected": float(sum(c.rejected for c in found)),
        }

    def compute(self, t: TrainedModel) -> float:
        return self.details(t)["value"]
