"""Model-level outcomes: one number per trained model, looked up by the outcome's ``kind``.

These are what the between-conditions shape compares across training conditions (PRODUCT.md
§3): accuracy, the achieved mean class selectivity, the area under an ablation curve, the
clusterability of the weights.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from scipy.integrate import trapezoid
from torch import nn

from falsify.data import Dataset
from falsify.data.corruptions import corrupt
from falsify.data.labels import training_labels
from falsify.hypothesis.schema import AccuracyOutcome, Population
from falsify.interventions.curves import ablation_curves, curve_auc
from falsify.interventions.perturb import direction_ablation_curves, noise_curve
from falsify.measures.adversarial import adversarial_accuracy
from falsify.measures.clusterability import model_clusterability
from falsify.measures.dimensionality import (
    covariance_spectrum,
    participation_ratio,
    pcs_for_variance,
)
from falsify.measures.selectivity import mean_selectivity, unit_activations
from falsify.units import default_layers

__all__ = ["MODEL_OUTCOMES", "MODEL_OUTCOME_DETAILS", "TrainedModel", "model_outcome"]


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
        return default_layers(self.model, named)


@torch.no_grad()
def _accuracy(spec: Any, t: TrainedModel) -> float:
    x, y = t.split(spec.split)
    t.model.eval()
    return (t.model(x).argmax(dim=1) == y).double().mean().item()


def _mean_selectivity(spec: Any, t: TrainedModel) -> float:
    x, y = t.split(spec.split)
    return mean_selectivity(t.model, t.layers(spec.layers), x, y, t.data.n_classes)


def _generator(spec: Any, t: TrainedModel) -> torch.Generator:
    # The same (outcome seed, replicate seed) gives the same random draws in every condition,
    # so conditions compared at one seed are perturbed alike (common random numbers).
    state = np.random.SeedSequence([spec.seed, t.seed]).generate_state(1)[0]
    return torch.Generator().manual_seed(int(state))


def _ablation_auc(spec: Any, t: TrainedModel) -> float:
    x, y = t.split(spec.split)
    g = _generator(spec, t)
    aucs = []
    for layer in t.layers(spec.layers):
        acc, base = ablation_curves(t.model, layer, x, y, spec.orders, g, spec.value)
        aucs.append(curve_auc(acc, base))
    return float(np.mean(aucs))


def _direction_ablation_auc(spec: Any, t: TrainedModel) -> float:
    x, y = t.split(spec.split)
    g = _generator(spec, t)
    aucs = []
    for layer in t.layers(spec.layers):
        acc, base = direction_ablation_curves(t.model, layer, x, y, spec.orders, g)
        aucs.append(curve_auc(acc, base))
    return float(np.mean(aucs))


def _noise_auc(spec: Any, t: TrainedModel) -> float:
    x, y = t.split(spec.split)
    g = _generator(spec, t)
    base = _accuracy(AccuracyOutcome(kind="accuracy", split=spec.split), t)
    if base <= 0:
        return float("nan")
    scales = np.asarray(spec.scales, dtype=float)
    aucs = []
    for layer in t.layers(spec.layers):
        rel = noise_curve(t.model, layer, x, y, spec.scales, spec.draws, g).numpy() / base
        aucs.append(trapezoid(rel, scales) / (scales[-1] - scales[0]))
    return float(np.mean(aucs))


@torch.no_grad()
def _corruption_accuracy(spec: Any, t: TrainedModel) -> float:
    x, y = t.split(spec.split)
    g = _generator(spec, t)
    t.model.eval()
    accs = [
        (t.model(corrupt(x, name, sev, g)).argmax(dim=1) == y).double().mean().item()
        for name in spec.corruptions
        for sev in spec.severities
    ]
    return float(np.mean(accs))


def _adversarial_accuracy(spec: Any, t: TrainedModel) -> float:
    x, y = t.split(spec.split)
    step = spec.step_size or 2.5 * spec.epsilon / spec.steps
    bounds = tuple(spec.bounds) if spec.bounds is not None else None
    return adversarial_accuracy(
        t.model, x, y, spec.attack, spec.epsilon, spec.steps, step, _generator(spec, t), bounds
    )


def _effective_dimensionality(spec: Any, t: TrainedModel) -> float:
    x, _ = t.split(spec.split)
    values = []
    for layer in t.layers(spec.layers):
        eig = covariance_spectrum(unit_activations(t.model, layer, x))
        values.append(
            participation_ratio(eig)
            if spec.measure == "participation_ratio"
            else pcs_for_variance(eig)
        )
    return float(np.mean(values))


_BASELINE_COLUMN = {"random_partition": "random_baseline", "shuffled": "shuffled_baseline"}


def _clusterability_details(spec: Any, t: TrainedModel) -> dict[str, float]:
    """C and both its baselines (mean over the layers), and ``value``: the outcome."""
    table = model_clusterability(
        t.model,
        t.layers(spec.layers),
        spec.k,
        shuffle_draws=spec.shuffle_draws,
        generator=_generator(spec, t),
    )
    mean = table.iloc[-1]
    out = {
        "clusterability": float(mean["clusterability"]),
        "random_baseline": float(mean["random_baseline"]),
        "shuffled_baseline": float(mean["shuffled_baseline"]),
    }
    column = _BASELINE_COLUMN.get(spec.baseline)
    out["value"] = out["clusterability"] - (out[column] if column else 0.0)
    return out


def _clusterability(spec: Any, t: TrainedModel) -> float:
    return _clusterability_details(spec, t)["value"]


# kind -> fn(spec, trained model) -> float
MODEL_OUTCOMES: dict[str, Callable[[Any, TrainedModel], float]] = {
    "accuracy": _accuracy,
    "mean_selectivity": _mean_selectivity,
    "ablation_auc": _ablation_auc,
    "direction_ablation_auc": _direction_ablation_auc,
    "noise_auc": _noise_auc,
    "corruption_accuracy": _corruption_accuracy,
    "adversarial_accuracy": _adversarial_accuracy,
    "effective_dimensionality": _effective_dimensionality,
    "clusterability": _clusterability,
}

# kind -> fn(spec, trained model) -> {"value": the outcome, **what it was computed from}, for
# outcomes whose report shows more than the outcome itself (e.g. clusterability's baselines).
MODEL_OUTCOME_DETAILS: dict[str, Callable[[Any, TrainedModel], dict[str, float]]] = {
    "clusterability": _clusterability_details,
}


def model_outcome(spec: Any, trained: TrainedModel) -> float:
    """The model-level outcome ``spec`` names, for one trained model."""
    return MODEL_OUTCOMES[spec.kind](spec, trained)
