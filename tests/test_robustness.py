from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from sklearn.decomposition import PCA
from torch import nn

from falsify.data.corruptions import CORRUPTIONS, MAX_SEVERITY, corrupt
from falsify.measures.adversarial import adversarial_accuracy, fgsm, pgd
from falsify.measures.dimensionality import (
    covariance_spectrum,
    participation_ratio,
    pcs_for_variance,
)


def _linear() -> tuple[nn.Module, torch.Tensor, torch.Tensor]:
    torch.manual_seed(0)
    model = nn.Sequential(nn.Flatten(), nn.Linear(6, 3)).eval()
    x = torch.rand(10, 6) * 0.5 + 0.25
    y = torch.arange(10) % 3
    return model, x, y


def test_fgsm_on_a_linear_model_matches_the_closed_form() -> None:
    model, x, y = _linear()
    w = model[1].weight.detach()  # [classes, features]
    b = model[1].bias.detach()
    # Closed form: ∂CE/∂x = Wᵀ (softmax(Wx + b) − onehot(y)).
    p = torch.softmax(x @ w.T + b, dim=1)
    grad = (p - F.one_hot(y, 3).float()) @ w
    expected = x + 0.1 * grad.sign()
    assert torch.allclose(fgsm(model, x, y, 0.1, bounds=None), expected, atol=1e-6)
    # With bounds the result is the same point clipped into them.
    assert torch.allclose(fgsm(model, x, y, 0.4), (x + 0.4 * grad.sign()).clamp(0, 1), atol=1e-6)
    assert all(param.grad is None for param in model.parameters())


def test_pgd_stays_in_the_ball_and_bounds_and_raises_the_loss() -> None:
    model, x, y = _linear()
    g = torch.Generator().manual_seed(0)
    adv = pgd(model, x, y, 0.05, steps=5, step_size=0.02, generator=g)
    assert (adv - x).abs().max() <= 0.05 + 1e-6
    assert adv.min() >= 0 and adv.max() <= 1
    with torch.no_grad():
        assert F.cross_entropy(model(adv), y) > F.cross_entropy(model(x), y)
    clean = (model(x).argmax(1) == y).float().mean().item()
    acc = adversarial_accuracy(model, x, y, "pgd", 0.2, 10, 0.05, g)
    assert acc <= clean


@pytest.mark.parametrize("name", list(CORRUPTIONS))
def test_corruptions_keep_shape_and_range_and_zero_is_identity(name: str) -> None:
    g = torch.Generator().manual_seed(0)
    x = torch.rand(5, 1, 8, 8, generator=g)
    assert corrupt(x, name, 0, g) is x
    distances = []
    for severity in range(1, MAX_SEVERITY + 1):
        out = corrupt(x, name, severity, torch.Generator().manual_seed(1))
        assert out.shape == x.shape and out.dtype == x.dtype
        assert out.min() >= 0 and out.max() <= 1
        distances.append((out - x).pow(2).mean().item())
    assert distances[0] > 0
    assert distances == sorted(distances)  # more severe, further from the clean image


def test_corruptions_refuse_bad_input() -> None:
    g = torch.Generator().manual_seed(0)
    with pytest.raises(ValueError, match="severity"):
        corrupt(torch.rand(2, 1, 8, 8), "blur", 6, g)
    with pytest.raises(ValueError, match="images"):
        corrupt(torch.rand(2, 64), "blur", 1, g)


def test_blur_preserves_a_constant_image() -> None:
    x = torch.full((1, 1, 8, 8), 0.3)
    assert torch.allclose(corrupt(x, "blur", 5, torch.Generator()), x)


def test_effective_dimensionality_against_sklearn_pca() -> None:
    rng = np.random.default_rng(0)
    act = rng.normal(size=(500, 6)) * np.array([5.0, 3.0, 1.0, 0.5, 0.1, 0.05])
    eig = covariance_spectrum(torch.from_numpy(act))
    ratio = PCA().fit(act).explained_variance_ratio_  # sklearn, independent of our code
    assert pcs_for_variance(eig, 0.95) == int(np.searchsorted(np.cumsum(ratio), 0.95) + 1)
    var = PCA().fit(act).explained_variance_
    assert participation_ratio(eig) == pytest.approx(var.sum() ** 2 / (var**2).sum())
    # By hand: k equal variances give a participation ratio of k.
    assert participation_ratio(torch.tensor([2.0, 2.0, 2.0, 0.0])) == pytest.approx(3.0)
    assert pcs_for_variance(torch.tensor([1.0, 0.0, 0.0])) == 1
