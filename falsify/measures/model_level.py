"""Model-level outcomes: one number per trained model, each a registered kind.

These are what the between-conditions shape compares across training conditions (PRODUCT.md
§3): accuracy, the achieved mean class selectivity, the area under an ablation curve, the
clusterability of the weights.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass
from functools import partial
from typing import Annotated, Any, ClassVar, Literal

import numpy as np
import torch
from pydantic import Field, field_validator
from scipy.integrate import trapezoid
from torch import nn

from falsify.data import Dataset
from falsify.data.base import answer_labels, per_example_scores
from falsify.data.corruptions import corrupt
from falsify.data.labels import training_labels
from falsify.data.stream import (
    Relabelled,
    StreamedDataset,
    is_stream,
    model_batches,
    on_device,
    with_labels,
)
from falsify.hypothesis.kinds import OutcomeKind, register
from falsify.hypothesis.schema import Population
from falsify.hypothesis.types import Seed, Split, UnitLayers
from falsify.hypothesis.units import Fill
from falsify.interventions.curves import ablation_curves, curve_auc
from falsify.interventions.perturb import direction_ablation_curves, noise_curve
from falsify.measures.activation import collect_unit_activations
from falsify.measures.adversarial import adversarial_accuracy
from falsify.measures.clusterability import model_clusterability
from falsify.measures.dimensionality import (
    covariance_spectrum,
    participation_ratio,
    pcs_for_variance,
)
from falsify.measures.selectivity import mean_selectivity, unit_activations
from falsify.units import default_layers

__all__ = [
    "AblationCurveOutcome",
    "AccuracyOutcome",
    "AdversarialAccuracyOutcome",
    "ClusterabilityOutcome",
    "CorruptionAccuracyOutcome",
    "DirectionAblationOutcome",
    "EffectiveDimensionalityOutcome",
    "LayerNoiseOutcome",
    "MeanSelectivityOutcome",
    "TrainedModel",
]


@dataclass(frozen=True)
class TrainedModel:
    """A trained replicate with what is needed to measure it: its recipe, data and seed."""

    model: nn.Module
    population: Population  # the condition's resolved population
    data: Dataset | StreamedDataset
    seed: int

    def split(self, which: str) -> tuple[Any, torch.Tensor]:
        """``(x, y)`` on the model's device; ``train`` labels are the ones it was trained on.
        Streamed data gives ``x`` as its split's Dataset, whose items carry the labels ``y``
        (:meth:`falsify.data.stream.StreamedDataset.split`)."""
        device = next(self.model.parameters()).device
        x, y = self.data.split(which)
        if which == "train":
            y = training_labels(self.population.training, y, self.data.n_classes, self.seed)
            if is_stream(x) and not torch.equal(y, self.data.y_train):
                x = Relabelled(x, y)
        return on_device(x, device), y.to(device)

    @torch.no_grad()
    def example_scores(self, which: str) -> tuple[torch.Tensor, torch.Tensor]:
        """``(correct, cross-entropy)`` of each example of split ``which``
        (:func:`falsify.data.base.per_example_scores`), in evaluation mode; streamed data is
        scored batch by batch."""
        x, y = self.split(which)
        self.model.eval()
        if not is_stream(x):
            return per_example_scores(self.model(x), y)
        parts = [
            per_example_scores(self.model(xb), yb) for xb, yb in model_batches(self.model, x, y)
        ]
        return torch.cat([c for c, _ in parts]), torch.cat([ce for _, ce in parts])

    def layers(self, named: tuple[str, ...]) -> tuple[str, ...]:
        return default_layers(self.model, named)


def _generator(seed: int, t: TrainedModel) -> torch.Generator:
    # The same (outcome seed, replicate seed) gives the same random draws in every condition,
    # so conditions compared at one seed are perturbed alike (common random numbers).
    state = np.random.SeedSequence([seed, t.seed]).generate_state(1)[0]
    return torch.Generator().manual_seed(int(state))


class _Outcome(OutcomeKind):
    docs: ClassVar[str] = "docs/between-conditions.md"

    def describe(self) -> str:
        split = getattr(self, "split", None)
        return f"{split} {self.label}" if split else self.label


@register
class AccuracyOutcome(_Outcome):
    """Accuracy of each model; on ``train`` it is scored against the labels it was trained on."""

    kind: Literal["accuracy"]
    split: Split = "test"

    label: ClassVar[str] = "accuracy"
    streams: ClassVar[bool] = True

    def compute(self, t: TrainedModel) -> float:
        return t.example_scores(self.split)[0].mean().item()


@register
class MeanSelectivityOutcome(_Outcome):
    """Mean over layers of the mean class selectivity index over units (Leavitt & Morcos 2021)."""

    kind: Literal["mean_selectivity"]
    layers: UnitLayers = ()  # empty: every unit layer of the model
    split: Split = "test"

    label: ClassVar[str] = "mean class selectivity"
    needs_unit_layers: ClassVar[bool] = True
    streams: ClassVar[bool] = True

    def compute(self, t: TrainedModel) -> float:
        x, y = t.split(self.split)
        classes = answer_labels(y)
        layers, n = t.layers(self.layers), t.data.n_classes
        if is_stream(x):
            source = with_labels(x, y, classes)
            batches = partial(model_batches, t.model, source, classes)
            return mean_selectivity(t.model, layers, batches, None, n)
        return mean_selectivity(t.model, layers, x, classes, n)


@register
class AblationCurveOutcome(_Outcome):
    """Area under the cumulative random-order ablation curve (Morcos et al. 2018).

    Units of each layer are ablated one more at a time in ``orders`` random orders; the area
    under accuracy / intact accuracy vs fraction ablated is 1 for a model that ignores the layer.
    """

    kind: Literal["ablation_auc"]
    layers: UnitLayers = ()  # empty: every unit layer; the outcome is the mean over layers
    orders: int = Field(5, ge=1)
    value: Fill = "zero"
    split: Split = "test"
    seed: Seed = 0  # with the replicate's seed, fixes the random orders

    label: ClassVar[str] = "ablation-curve AUC"
    needs_unit_layers: ClassVar[bool] = True
    streams: ClassVar[bool] = True

    def compute(self, t: TrainedModel) -> float:
        x, y = t.split(self.split)
        g = _generator(self.seed, t)
        aucs = []
        for layer in t.layers(self.layers):
            acc, base = ablation_curves(t.model, layer, x, y, self.orders, g, self.value)
            aucs.append(curve_auc(acc, base))
        return float(np.mean(aucs))


@register
class DirectionAblationOutcome(_Outcome):
    """Area under the curve of cumulative ablation of random orthonormal directions of a layer
    (Morcos et al. 2018); 1 for a model that ignores the layer."""

    kind: Literal["direction_ablation_auc"]
    layers: UnitLayers = ()
    orders: int = Field(3, ge=1)  # random bases per model
    split: Split = "test"
    seed: Seed = 0

    label: ClassVar[str] = "random-direction ablation AUC"
    needs_unit_layers: ClassVar[bool] = True

    def compute(self, t: TrainedModel) -> float:
        x, y = t.split(self.split)
        g = _generator(self.seed, t)
        aucs = []
        for layer in t.layers(self.layers):
            acc, base = direction_ablation_curves(t.model, layer, x, y, self.orders, g)
            aucs.append(curve_auc(acc, base))
        return float(np.mean(aucs))


@register
class LayerNoiseOutcome(_Outcome):
    """Area under accuracy / intact accuracy vs the scale of Gaussian noise added to a layer,
    each unit's noise scaled by its own standard deviation (Morcos et al. 2018)."""

    kind: Literal["noise_auc"]
    layers: UnitLayers = ()
    scales: tuple[Annotated[float, Field(ge=0.0)], ...] = Field(
        (0.0, 0.5, 1.0, 1.5, 2.0), min_length=2
    )
    draws: int = Field(3, ge=1)  # noise draws per scale
    split: Split = "test"
    seed: Seed = 0

    label: ClassVar[str] = "layer-noise AUC"
    needs_unit_layers: ClassVar[bool] = True

    @field_validator("scales")
    @classmethod
    def _increasing(cls, v: tuple[float, ...]) -> tuple[float, ...]:
        if any(b <= a for a, b in itertools.pairwise(v)):
            raise ValueError("an increasing list of noise scales")
        return v

    def compute(self, t: TrainedModel) -> float:
        x, y = t.split(self.split)
        g = _generator(self.seed, t)
        base = AccuracyOutcome(kind="accuracy", split=self.split).compute(t)
        if base <= 0:
            return float("nan")
        scales = np.asarray(self.scales, dtype=float)
        aucs = []
        for layer in t.layers(self.layers):
            rel = noise_curve(t.model, layer, x, y, self.scales, self.draws, g).numpy() / base
            aucs.append(trapezoid(rel, scales) / (scales[-1] - scales[0]))
        return float(np.mean(aucs))


@register
class CorruptionAccuracyOutcome(_Outcome):
    """Mean accuracy over naturalistic corruptions × severities (Hendrycks & Dietterich 2019)."""

    kind: Literal["corruption_accuracy"]
    corruptions: tuple[Literal["gaussian_noise", "blur", "contrast"], ...] = Field(
        ("gaussian_noise", "blur", "contrast"), min_length=1
    )
    severities: tuple[Annotated[int, Field(ge=0, le=5)], ...] = Field((1, 2, 3, 4, 5), min_length=1)
    split: Split = "test"
    seed: Seed = 0

    label: ClassVar[str] = "accuracy under corruptions"

    @torch.no_grad()
    def compute(self, t: TrainedModel) -> float:
        x, y = t.split(self.split)
        g = _generator(self.seed, t)
        t.model.eval()
        accs = [
            (t.model(corrupt(x, name, sev, g)).argmax(dim=1) == y).double().mean().item()
            for name in self.corruptions
            for sev in self.severities
        ]
        return float(np.mean(accs))


@register
class AdversarialAccuracyOutcome(_Outcome):
    """Accuracy under an L∞ attack: FGSM (Goodfellow et al. 2015) or PGD (Madry et al. 2018)."""

    kind: Literal["adversarial_accuracy"]
    attack: Literal["fgsm", "pgd"] = "fgsm"
    epsilon: float = Field(gt=0.0)
    steps: int = Field(10, ge=1)  # PGD only
    step_size: float | None = Field(None, gt=0.0)  # PGD only; default 2.5 · ε / steps
    bounds: tuple[float, float] | None = (0.0, 1.0)  # the data's range; null: no clipping
    split: Split = "test"
    seed: Seed = 0

    label: ClassVar[str] = "adversarial accuracy"
    example: ClassVar[dict[str, Any]] = {"epsilon": 0.1}

    def compute(self, t: TrainedModel) -> float:
        x, y = t.split(self.split)
        step = self.step_size or 2.5 * self.epsilon / self.steps
        bounds = tuple(self.bounds) if self.bounds is not None else None
        return adversarial_accuracy(
            t.model,
            x,
            y,
            self.attack,
            self.epsilon,
            self.steps,
            step,
            _generator(self.seed, t),
            bounds,
        )


@register
class EffectiveDimensionalityOutcome(_Outcome):
    """Effective dimensionality of the layers' representations, mean over layers."""

    kind: Literal["effective_dimensionality"]
    measure: Literal["participation_ratio", "pcs_95"] = "participation_ratio"
    layers: UnitLayers = ()
    split: Split = "test"

    label: ClassVar[str] = "effective dimensionality"
    needs_unit_layers: ClassVar[bool] = True
    streams: ClassVar[bool] = True

    def compute(self, t: TrainedModel) -> float:
        x, _ = t.split(self.split)
        device = next(t.model.parameters()).device
        values = []
        for layer in t.layers(self.layers):
            if is_stream(x):  # [examples, units], collected batch by batch
                acts = collect_unit_activations(t.model, layer, x, device=device)
            else:
                acts = unit_activations(t.model, layer, x)
            eig = covariance_spectrum(acts)
            values.append(
                participation_ratio(eig)
                if self.measure == "participation_ratio"
                else pcs_for_variance(eig)
            )
        return float(np.mean(values))


_BASELINE_COLUMN = {"random_partition": "random_baseline", "shuffled": "shuffled_baseline"}


@register
class ClusterabilityOutcome(_Outcome):
    """Clusterability of the named layers' weights, mean over layers (Golechha, Cope & Schoots
    2024; modularity.md): spectral co-clustering of |W| into ``k`` bipartite clusters, then the
    share of the squared weight inside them; optionally minus a baseline.

    ``baseline``: ``none`` (C itself); ``random_partition`` (C − its expectation under a random
    partition with the co-clustering's cluster sizes, ≈ 1/k); ``shuffled`` (C − the mean C of
    ``shuffle_draws`` edge-shuffled copies of the same weights, each co-clustered afresh: the
    null that includes the co-clustering's own search, which the random partition does not).
    """

    kind: Literal["clusterability"]
    layers: UnitLayers = ()  # empty: every unit layer (the linear layer feeding it)
    k: int = Field(4, ge=2)
    baseline: Literal["none", "random_partition", "shuffled"] = "none"
    shuffle_draws: int = Field(5, ge=1)
    seed: Seed = 0  # with the replicate's seed, fixes the shuffles

    label: ClassVar[str] = "clusterability"
    docs: ClassVar[str] = "docs/modularity-and-attribution.md"
    needs_unit_layers: ClassVar[bool] = True
    detail_figure: ClassVar[str] = "clusterability_baselines"
    streams: ClassVar[bool] = True  # reads the weights, never the data

    def details(self, t: TrainedModel) -> dict[str, float]:
        """C and both its baselines (mean over the layers), and ``value``: the outcome."""
        table = model_clusterability(
            t.model,
            t.layers(self.layers),
            self.k,
            shuffle_draws=self.shuffle_draws,
            generator=_generator(self.seed, t),
        )
        mean = table.iloc[-1]
        out = {
            "clusterability": float(mean["clusterability"]),
            "random_baseline": float(mean["random_baseline"]),
            "shuffled_baseline": float(mean["shuffled_baseline"]),
        }
        column = _BASELINE_COLUMN.get(self.baseline)
        out["value"] = out["clusterability"] - (out[column] if column else 0.0)
        return out

    def compute(self, t: TrainedModel) -> float:
        return self.details(t)["value"]
