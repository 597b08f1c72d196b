"""Model-level outcomes: one number per trained model, looked up by the outcome's ``kind``.

These are what the between-conditions shape compares across training conditions (PRODUCT.md
§3): accuracy, the achieved mean class selectivity, the area under an ablation curve.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import nn

from falsify.data import Dataset
from falsify.hypothesis.schema import Population
from falsify.interventions.curves import ablation_curves, curve_auc
from falsify.measures.selectivity import mean_selectivity
from falsify.models import unit_layers
from falsify.models.training import training_labels

__all__ = ["MODEL_OUTCOMES", "TrainedModel", "model_outcome"]


@dataclass(frozen=True)
class TrainedModel:
    """A trained replicate with what is needed to measure it: its recipe, data and seed."""

    model: nn.Module
    population: Population  # the condition's resolved population
    data: Dataset
    seed: int

    def split(self, which: str) -> tuple[torch.Tensor, torch.Tensor]:
        """``(x, y)`` on the model's device; ``train`` labels are the ones it was trained on."""
        device = next(self.model.parameters()).device
        if which == "train":
            y = training_labels(
                self.population.training, self.data.y_train, self.data.n_classes, self.seed
            )
            return self.data.x_train.to(device), y.to(device)
        return self.data.x_test.to(device), self.data.y_test.to(device)

    def layers(self, named: tuple[str, ...]) -> tuple[str, ...]:
        return named or unit_layers(self.model)


@torch.no_grad()
def _accuracy(spec: Any, t: TrainedModel) -> float:
    x, y = t.split(spec.split)
    t.model.eval()
    return (t.model(x).argmax(dim=1) == y).double().mean().item()


def _mean_selectivity(spec: Any, t: TrainedModel) -> float:
    x, y = t.split(spec.split)
    return mean_selectivity(t.model, t.layers(spec.layers), x, y, t.data.n_classes)


def _ablation_auc(spec: Any, t: TrainedModel) -> float:
    x, y = t.split(spec.split)
    # The same (outcome seed, replicate seed) gives the same orders in every condition, so
    # conditions compared at one seed are ablated in the same random orders.
    state = np.random.SeedSequence([spec.seed, t.seed]).generate_state(1)[0]
    g = torch.Generator().manual_seed(int(state))
    aucs = []
    for layer in t.layers(spec.layers):
        acc, base = ablation_curves(t.model, layer, x, y, spec.orders, g, spec.value)
        aucs.append(curve_auc(acc, base))
    return float(np.mean(aucs))


# kind -> fn(spec, trained model) -> float
MODEL_OUTCOMES: dict[str, Callable[[Any, TrainedModel], float]] = {
    "accuracy": _accuracy,
    "mean_selectivity": _mean_selectivity,
    "ablation_auc": _ablation_auc,
}


def model_outcome(spec: Any, trained: TrainedModel) -> float:
    """The model-level outcome ``spec`` names, for one trained model."""
    return MODEL_OUTCOMES[spec.kind](spec, trained)
