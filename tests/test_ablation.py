from __future__ import annotations

import pytest
import torch
from captum.attr import LayerFeatureAblation
from torch.nn import functional as F

from falsify.data import load_dataset
from falsify.data.digits import DigitsData
from falsify.data.synthetic import SyntheticData
from falsify.hypothesis.schema import Population, TrainingSpec
from falsify.interventions import (
    ablated,
    ablation_effects,
    fill_values,
    get_layer,
    single_unit_masks,
)
from falsify.measures import class_conditional_means, selectivity_index
from falsify.models.mlp import MLPSpec
from falsify.models.planted import planted_model
from falsify.models.training import train_replicate

SPEC = SyntheticData(kind="synthetic", noise=0.1, n_samples=800)


@pytest.fixture(scope="module")
def trained():
    # Narrow layers on digits, so that single units visibly change accuracy.
    pop = Population(
        data=DigitsData(kind="digits"),
        model=MLPSpec(kind="mlp", hidden=(12, 8)),
        training=TrainingSpec(epochs=5, lr=0.01),
        seeds=2,
    )
    data = load_dataset(pop.data)
    return train_replicate(pop, data, 0, torch.device("cpu")).model, data


@pytest.mark.parametrize("layer", ["hidden1", "hidden2"])
@pytest.mark.parametrize("value", ["zero", "mean"])
@pytest.mark.parametrize("metric", ["accuracy_drop", "loss_increase"])
def test_engine_equals_captum_layer_feature_ablation(trained, layer, value, metric) -> None:
    model, data = trained
    x, y = data.x_test, data.y_test

    def forward(inp: torch.Tensor) -> torch.Tensor:
        out = model(inp)
        if metric == "accuracy_drop":
            return (out.argmax(1) == y).double().mean()
        return -F.cross_entropy(out.double(), y)  # captum reports f(intact) − f(ablated)

    n_units = fill_values(model, layer, x, "zero").shape[0]
    baselines = None if value == "zero" else fill_values(model, layer, x, "mean").unsqueeze(0)
    reference = LayerFeatureAblation(forward, get_layer(model, layer)).attribute(
        x, layer_mask=torch.arange(n_units).unsqueeze(0), layer_baselines=baselines
    )[0]
    ours = ablation_effects(
        model, layer, x, y, single_unit_masks(n_units), value=value, metric=metric
    )
    assert torch.allclose(ours.double(), reference.double(), atol=1e-6)
    assert reference.abs().max() > 0  # the comparison is not between two zero vectors


@pytest.mark.parametrize("batch_size,max_rows", [(1024, 1 << 16), (37, 100), (1000, 1)])
def test_batched_engine_equals_plain_hook_loop(trained, batch_size, max_rows) -> None:
    model, data = trained
    x, y = data.x_test, data.y_test
    masks = torch.rand(9, 8, generator=torch.Generator().manual_seed(0)) < 0.3
    fill = fill_values(model, "hidden2", x, "mean")
    expected = []
    base = F.cross_entropy(model(x), y).item()
    for mask in masks:
        with ablated(model, "hidden2", mask, fill):
            expected.append(F.cross_entropy(model(x), y).item() - base)
    ours = ablation_effects(
        model,
        "hidden2",
        x,
        y,
        masks,
        value="mean",
        metric="loss_increase",
        batch_size=batch_size,
        max_rows=max_rows,
    )
    assert ours.tolist() == pytest.approx(expected, abs=1e-5)
    unbatched = ablation_effects(
        model, "hidden2", x, y, masks, value="mean", metric="loss_increase", batched=False
    )
    assert torch.allclose(ours, unbatched, atol=1e-6)


def test_planted_ground_truth_is_recovered() -> None:
    model, roles = planted_model(SPEC)
    data = load_dataset(SPEC)
    x, y = data.x_test, data.y_test
    effects = ablation_effects(model, "hidden1", x, y, single_unit_masks(10))
    essential = effects[roles["essential"]]
    others = effects[roles["redundant"] + roles["selective_unimportant"]]
    # An essential unit is the only route for its class: ablating it costs that class.
    assert (essential > 0.8 / SPEC.n_classes).all()
    assert (others.abs() < 0.01).all()
    # Selective-but-unimportant units are highly selective yet have exactly zero effect.
    si = selectivity_index(class_conditional_means(model, "hidden1", x, y, SPEC.n_classes))
    assert (si[roles["selective_unimportant"]] > 0.9).all()
    assert torch.equal(effects[roles["selective_unimportant"]], torch.zeros(SPEC.n_classes))
    # Ablating both copies of a redundant pair does hurt: the redundancy is what protects it.
    pair = torch.zeros(1, 10, dtype=torch.bool)
    pair[0, roles["redundant"][:2]] = True
    assert ablation_effects(model, "hidden1", x, y, pair)[0] > 0.8 / SPEC.n_classes
