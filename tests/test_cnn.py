from __future__ import annotations

import pytest
import torch

from falsify.data import load_dataset
from falsify.data.digits import DigitsData
from falsify.errors import FalsifyError
from falsify.hypothesis import load
from falsify.interventions import ablated, ablation_effects, capture
from falsify.measures import class_conditional_means
from falsify.models import build_model
from falsify.models.cnn import CNNSpec
from falsify.runner import ModelCache, run_hypothesis
from falsify.units import unit_views

DIGITS = DigitsData(kind="digits")


def _cnn(**kw) -> torch.nn.Module:
    torch.manual_seed(0)
    return build_model(CNNSpec(kind="cnn", **kw), (1, 8, 8), 10).eval()


def test_blocks_are_named_and_pool_down() -> None:
    model = _cnn(channels=(4, 6, 5, 3))
    assert tuple(unit_views(model)) == ("conv1", "conv2", "conv3", "conv4")
    x = torch.rand(2, 1, 8, 8)
    shapes = {}
    for layer in unit_views(model):
        with capture(model, layer) as outs:
            model(x)
        shapes[layer] = tuple(outs[0].shape)
        assert outs[0].min() >= 0  # post-ReLU
    # 8 -> 4 -> 2 -> 1, then no more pooling below one pixel
    assert shapes == {
        "conv1": (2, 4, 4, 4),
        "conv2": (2, 6, 2, 2),
        "conv3": (2, 5, 1, 1),
        "conv4": (2, 3, 1, 1),
    }
    assert model(x).shape == (2, 10)


def test_channel_selectivity_and_channel_ablation() -> None:
    data = load_dataset(DIGITS)
    model = _cnn(channels=(4, 6))
    x, y = data.x_test[:200], data.y_test[:200]
    means = class_conditional_means(model, "conv2", data.x_test, data.y_test, 10)
    assert means.shape == (10, 6)
    masks = torch.eye(6, dtype=torch.bool)
    masks = torch.cat([masks, torch.ones(1, 6, dtype=torch.bool)])
    batched = ablation_effects(model, "conv2", x, y, masks, metric="loss_increase")
    looped = ablation_effects(model, "conv2", x, y, masks, metric="loss_increase", batched=False)
    assert torch.allclose(batched, looped, atol=1e-5)
    # Every channel ablated: the logits are the head's bias, the same for every image.
    with ablated(model, "conv2", torch.ones(6, dtype=torch.bool), torch.zeros(6, 2, 2)):
        logits = model(x)
    assert torch.allclose(logits, model.head.bias.expand_as(logits))


def test_cnn_needs_images() -> None:
    with pytest.raises(FalsifyError, match="cnn needs images"):
        build_model(CNNSpec(kind="cnn"), (16,), 4)


def test_cnn_grid_end_to_end(write, tmp_path) -> None:
    path = write(
        """\
        id: cnn_tiny
        claim: Batch norm changes a small conv net's reliance on single channels.
        population:
          data: {kind: digits}
          model: {kind: cnn, channels: [4, 6]}
          training: {epochs: 1, batch_size: 128, lr: 0.01, selectivity_alpha: 0.5}
          seeds: 2
          conditions:
            model.batch_norm: [false, true]
        test:
          kind: between_conditions
          outcome: {kind: ablation_auc, layers: [conv2], orders: 2}
          compare: {kind: reference, reference: {model.batch_norm: false}}
        prediction: {direction: positive, sesoi: 0.02}
        """
    )
    outcome = run_hypothesis(load(path), ModelCache(tmp_path / "c"), torch.device("cpu"), False)
    assert outcome.parts["part"].tolist() == ["batch_norm=true vs batch_norm=false"]
    values = outcome.replicates["statistic"]
    assert ((values > 0) & (values <= 1.5)).all()
    assert (
        (outcome.replicates["mean_selectivity"] >= 0)
        & (outcome.replicates["mean_selectivity"] <= 1)
    ).all()
