from __future__ import annotations

import pytest
import torch
from torch import nn

from falsify.measures import class_conditional_means, selectivity_index


def test_selectivity_index_by_hand() -> None:
    # 3 classes × 4 units of class-conditional means.
    means = torch.tensor(
        [
            [1.0, 2.0, 0.0, 3.0],
            [0.0, 2.0, 0.0, 1.0],
            [0.0, 2.0, 0.0, 2.0],
        ]
    )
    si = selectivity_index(means, epsilon=0.0 + 1e-12)
    # unit 0: μmax 1, μ−max (0+0)/2 = 0  -> (1-0)/(1+0) = 1
    # unit 1: μmax 2, μ−max 2            -> 0
    # unit 2: silent for every class     -> 0/(0+ε) = 0
    # unit 3: μmax 3, μ−max (1+2)/2=1.5  -> 1.5/4.5 = 1/3
    assert si.tolist() == pytest.approx([1.0, 0.0, 0.0, 1 / 3], abs=1e-6)


def test_silent_unit_is_zero_with_default_epsilon() -> None:
    si = selectivity_index(torch.zeros(10, 3))
    assert torch.equal(si, torch.zeros(3))


class _Identity(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.layer = nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.layer(x)


def test_streaming_means_match_an_activation_table() -> None:
    # The "activation table": the model's layer output is the input itself.
    x = torch.tensor([[1.0, 0.0], [3.0, 0.0], [0.0, 5.0], [0.0, 1.0], [2.0, 2.0], [4.0, 0.0]])
    y = torch.tensor([0, 0, 1, 1, 2, 2])
    expected = torch.tensor([[2.0, 0.0], [0.0, 3.0], [3.0, 1.0]])
    for batch_size in (1, 2, 4, 6):
        means = class_conditional_means(_Identity(), "layer", x, y, 3, batch_size=batch_size)
        assert torch.allclose(means, expected)
    si = selectivity_index(expected)
    # unit 0: (3 − 1)/(3 + 1) = 0.5; unit 1: (3 − 0.5)/(3 + 0.5)
    assert si.tolist() == pytest.approx([0.5, 2.5 / 3.5], abs=1e-6)


def test_conv_channels_are_averaged_over_space() -> None:
    x = torch.zeros(2, 1, 2, 2)
    x[0, 0] = torch.tensor([[4.0, 0.0], [0.0, 0.0]])  # spatial mean 1
    means = class_conditional_means(_Identity(), "layer", x, torch.tensor([0, 1]), 2)
    assert means[:, 0].tolist() == [1.0, 0.0]


def test_missing_class_is_an_error() -> None:
    with pytest.raises(ValueError, match="no examples"):
        class_conditional_means(_Identity(), "layer", torch.ones(2, 1), torch.tensor([0, 0]), 2)
