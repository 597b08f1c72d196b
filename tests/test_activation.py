from __future__ import annotations

import pytest
import torch

from falsify.errors import HypothesisError
from falsify.hypothesis.loader import loads
from falsify.measures.activation import MeanActivation
from falsify.models.cnn import CNN
from falsify.models.mlp import MLP


def test_mean_activation_is_the_mean_of_post_relu_outputs() -> None:
    model = MLP(2, (2,), n_classes=2).eval()
    with torch.no_grad():
        model.hidden1.linear.weight.copy_(torch.eye(2))
        model.hidden1.linear.bias.zero_()
    x = torch.tensor([[1.0, -1.0], [3.0, 2.0]])
    y = torch.tensor([0, 1])
    got = MeanActivation(kind="mean_activation").measure(model, "hidden1", x, y, 2)
    # ReLU([[1, -1], [3, 2]]) = [[1, 0], [3, 2]]: column means [2, 1]. Read before the ReLU it
    # would be [2, 0.5].
    torch.testing.assert_close(got, torch.tensor([2.0, 1.0]))


def test_mean_activation_of_a_conv_channel_averages_over_space() -> None:
    torch.manual_seed(0)
    model = CNN((1, 8, 8), (3,), n_classes=2).eval()
    x = torch.rand(5, 1, 8, 8)
    got = MeanActivation(kind="mean_activation").measure(model, "conv1", x, torch.zeros(5), 2)
    with torch.no_grad():
        by_hand = model.conv1(x).mean(dim=(0, 2, 3))  # [channels]
    assert got.shape == (3,)
    torch.testing.assert_close(got, by_hand)


def test_a_misspelt_measure_suggests_it(tiny_yaml: str) -> None:
    text = tiny_yaml.replace("x: {kind: class_selectivity}", "x: {kind: mean_activaton}")
    with pytest.raises(HypothesisError, match="Did you mean 'mean_activation'"):
        loads(text, "h.yaml")
