from __future__ import annotations

import pytest
import torch
from torch import nn

from falsify.data import load_dataset
from falsify.data.synthetic import SyntheticData
from falsify.interventions import ablated
from falsify.interventions.curves import ablation_curves, cumulative_masks, curve_auc
from falsify.interventions.perturb import (
    direction_ablation_curves,
    noise_curve,
    random_directions,
    unit_spread,
)
from falsify.models.planted import planted_model

SPEC = SyntheticData(kind="synthetic", n_samples=400, n_classes=4, n_features=8, noise=0.1)


class _Bypass(nn.Module):
    """Computes ``side`` but its output never reaches the logits."""

    def __init__(self) -> None:
        super().__init__()
        self.side = nn.Sequential(nn.Linear(8, 6), nn.ReLU())
        self.head = nn.Linear(8, 4)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.side(x)
        return self.head(x)


def test_masks_ablate_one_more_unit_per_step() -> None:
    perms = torch.tensor([[2, 0, 1], [1, 2, 0]])
    masks = cumulative_masks(perms).view(2, 4, 3)
    assert masks.sum(dim=2).tolist() == [[0, 1, 2, 3], [0, 1, 2, 3]]
    assert masks[0, 1].tolist() == [False, False, True]  # order 0 ablates unit 2 first
    assert masks[1, 2].tolist() == [False, True, True]  # order 1: units 1 then 2


def test_auc_is_one_when_the_output_ignores_the_layer() -> None:
    data = load_dataset(SPEC)
    torch.manual_seed(0)
    model = _Bypass().eval()
    acc, base = ablation_curves(
        model, "side", data.x_test, data.y_test, 3, torch.Generator().manual_seed(0)
    )
    assert acc.shape == (3, 7)
    assert torch.allclose(acc, torch.full_like(acc, base))
    assert curve_auc(acc, base) == pytest.approx(1.0)


def test_auc_drops_for_a_network_that_needs_the_layer() -> None:
    data = load_dataset(SPEC)
    model, _ = planted_model(SPEC)
    x, y = data.x_test, data.y_test
    acc, base = ablation_curves(model, "hidden1", x, y, 4, torch.Generator().manual_seed(1))
    assert base > 0.95
    assert torch.allclose(acc[:, 0], torch.full((4,), base, dtype=acc.dtype))
    # Every unit ablated: the silent network predicts its default class.
    n_units = acc.shape[1] - 1
    with ablated(model, "hidden1", torch.ones(n_units, dtype=torch.bool), torch.zeros(n_units)):
        all_off = (model(x).argmax(1) == y).double().mean().item()
    assert torch.allclose(acc[:, -1], torch.full((4,), all_off, dtype=acc.dtype))
    auc = curve_auc(acc, base)
    assert 0.25 < auc < 0.9
    # Accuracy never rises as more of the planted (all-positive) units are removed.
    assert bool((acc[:, 1:] <= acc[:, :-1] + 1e-9).all())


def test_random_directions_are_orthonormal() -> None:
    q = random_directions(7, torch.Generator().manual_seed(0))
    assert torch.allclose(q.T @ q, torch.eye(7, dtype=q.dtype), atol=1e-10)


def test_direction_ablation_runs_from_intact_to_silent() -> None:
    data = load_dataset(SPEC)
    model, _ = planted_model(SPEC)
    x, y = data.x_test, data.y_test
    acc, base = direction_ablation_curves(
        model, "hidden1", x, y, 2, torch.Generator().manual_seed(0)
    )
    n_units = acc.shape[1] - 1
    with ablated(model, "hidden1", torch.ones(n_units, dtype=torch.bool), torch.zeros(n_units)):
        all_off = (model(x).argmax(1) == y).double().mean().item()
    assert acc[:, 0].tolist() == pytest.approx([base, base])
    assert acc[:, -1].tolist() == pytest.approx([all_off, all_off])
    assert curve_auc(acc, base) < 0.95
    torch.manual_seed(0)
    bypass = _Bypass().eval()
    acc, base = direction_ablation_curves(bypass, "side", x, y, 2, torch.Generator().manual_seed(0))
    assert curve_auc(acc, base) == pytest.approx(1.0)


def test_noise_is_scaled_per_unit_and_zero_scale_is_identity() -> None:
    data = load_dataset(SPEC)
    model, _ = planted_model(SPEC)
    x, y = data.x_test, data.y_test
    with torch.no_grad():
        h = model.hidden1(x)
    assert torch.allclose(unit_spread(model, "hidden1", x), h.std(dim=0))
    g = torch.Generator().manual_seed(0)
    curve = noise_curve(model, "hidden1", x, y, [0.0, 1.0, 4.0], 3, g)
    base = (model(x).argmax(1) == y).double().mean().item()
    assert curve[0].item() == base
    assert curve[2].item() < curve[0].item()
    torch.manual_seed(0)
    bypass = _Bypass().eval()
    flat = noise_curve(bypass, "side", x, y, [0.0, 2.0], 2, g)
    assert flat[0].item() == flat[1].item()
