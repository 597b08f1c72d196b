from __future__ import annotations

import pandas as pd
import pytest
import torch

from falsify.cli.main import main
from falsify.interventions import get_layer
from falsify.measures import attribution_scores
from falsify.models.mlp import MLPSpec, build_mlp

METHODS = ["layer_conductance", "layer_integrated_gradients", "gradient_x_activation"]


@pytest.fixture(scope="module")
def tiny():
    """A one-hidden-layer MLP: the head is linear, so every attribution has a closed form."""
    torch.manual_seed(0)
    model = build_mlp(MLPSpec(kind="mlp", hidden=(5,)), (3,), 4).eval()
    with torch.no_grad():
        model.hidden1.linear.bias.uniform_(-0.5, 0.5)  # nonzero: separates the methods
    g = torch.Generator().manual_seed(1)
    x = torch.randn(40, 3, generator=g)
    y = torch.randint(0, 4, (40,), generator=g)
    return model, x, y


def _closed_form(method: str, model, x, y, baseline: str) -> torch.Tensor:
    """Direct computation for h = relu(W1 x + b1), logits = W2 h + b2, target class t.

    ∂logit_t/∂h_u = W2[t, u] everywhere, so gradient × activation = h_u(x) · W2[t, u], and both
    path methods integrate a constant gradient along the layer's path from h(x') to h(x):
    (h_u(x) − h_u(x')) · W2[t, u] (completeness of IG and of conductance, Sundararajan et al.
    2017; Dhamdhere et al. 2019), x' the baseline input.
    """
    with torch.no_grad():
        h = model.hidden1(x)  # [n, 5]
        w = model.head.weight[y]  # [n, 5]: W2[t_n, :]
        if method == "gradient_x_activation":
            per_example = h * w
        else:
            base = torch.zeros_like(x) if baseline == "zero" else x.mean(0, keepdim=True)
            per_example = (h - model.hidden1(base)) * w
    return per_example.abs().mean(dim=0)


@pytest.mark.parametrize("method", METHODS)
@pytest.mark.parametrize("baseline", ["zero", "mean"])
def test_scores_equal_the_closed_form(tiny, method, baseline) -> None:
    model, x, y = tiny
    ours = attribution_scores(method, model, "hidden1", x, y, baseline=baseline, batch_size=16)
    expected = _closed_form(method, model, x, y, baseline)
    assert ours.shape == (5,)
    assert torch.allclose(ours, expected, atol=1e-5)
    assert expected.min() > 0  # every unit contributes: the comparison is not between zeros


def test_methods_differ_where_the_closed_forms_do(tiny) -> None:
    model, x, y = tiny
    gxa = attribution_scores("gradient_x_activation", model, "hidden1", x, y)
    ig = attribution_scores("layer_integrated_gradients", model, "hidden1", x, y)
    # With a nonzero hidden bias, h(0) = relu(b1) ≠ 0, so IG drops what GxA keeps.
    assert not torch.allclose(gxa, ig, atol=1e-3)


def test_measure_registry_reads_the_spec(tiny) -> None:
    from falsify.measures.attribution import LayerIntegratedGradientsScore

    model, x, y = tiny
    spec = LayerIntegratedGradientsScore(kind="layer_integrated_gradients", baseline="mean")
    got = spec.measure(model, "hidden1", x, y, 4)
    assert torch.allclose(got, _closed_form("ig", model, x, y, "mean"), atol=1e-5)


def test_attribution_leaves_no_hook_and_the_weights_unchanged(tiny) -> None:
    model, x, y = tiny
    before = {k: v.clone() for k, v in model.state_dict().items()}
    for method in METHODS:
        attribution_scores(method, model, "hidden1", x, y)
    for name, module in model.named_modules():
        assert not module._forward_hooks, name
        assert not module._forward_pre_hooks, name
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())
    assert get_layer(model, "hidden1") is model.hidden1


ASSOCIATION = """\
id: tiny_attr
claim: Units with larger attributions matter more (a fast test population).
population:
  data: {kind: digits}
  model: {kind: mlp, hidden: [16]}
  training: {epochs: 3, batch_size: 128, lr: 0.01}
  seeds: 3
test:
  kind: association
  layers: [hidden1]
  x: {kind: gradient_x_activation}
  y: {kind: unit_ablation}
prediction:
  direction: positive
  sesoi: 0.1
"""


def test_attribution_as_the_x_of_an_association(write, tmp_path, capsys) -> None:
    path = write(ASSOCIATION)
    out = tmp_path / "reports"
    assert (
        main(["run", str(path), "--out", str(out), "--cache", str(tmp_path / "c"), "--quiet"]) == 0
    )
    assert "tiny_attr:" in capsys.readouterr().out
    tidy = pd.read_csv(out / "tiny_attr.csv")
    # x is a mean absolute attribution: non-negative, and not the same for every unit.
    assert (tidy["x"] >= 0).all() and tidy["x"].nunique() > 1
    assert (out / "tiny_attr.png").stat().st_size > 1000
