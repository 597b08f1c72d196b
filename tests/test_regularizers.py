from __future__ import annotations

import pytest
import torch

from falsify.hypothesis.schema import TrainingSpec
from falsify.measures.selectivity import selectivity_index
from falsify.models.mlp import MLP
from falsify.models.regularizers import (
    Selectivity,
    SelectivityTerm,
    batch_selectivity,
    build_regularizers,
    captured_activations,
)


def test_batch_selectivity_matches_the_measure_on_class_means() -> None:
    act = torch.tensor([[2.0, 1.0], [4.0, 1.0], [0.0, 3.0], [1.0, 0.0]])
    y = torch.tensor([0, 0, 1, 2])
    # class means: c0 = [3, 1], c1 = [0, 3], c2 = [1, 0]
    # unit 0: (3 − 0.5)/(3 + 0.5); unit 1: (3 − 0.5)/(3 + 0.5)
    expected = (2.5 / 3.5 + 2.5 / 3.5) / 2
    assert batch_selectivity(act, y, n_classes=4).item() == pytest.approx(expected, abs=1e-6)
    means = torch.tensor([[3.0, 1.0], [0.0, 3.0], [1.0, 0.0]])
    assert batch_selectivity(act, y, 4).item() == pytest.approx(
        selectivity_index(means).mean().item()
    )
    # one class present: no selectivity, but still a tensor in the graph
    assert batch_selectivity(act, torch.zeros(4, dtype=torch.long), 4).item() == 0.0


def _mean_si(model: MLP, x: torch.Tensor, y: torch.Tensor) -> float:
    with torch.no_grad(), captured_activations(model, ["hidden1"]) as acts:
        model(x)
        return batch_selectivity(acts["hidden1"], y, 4).item()


@pytest.mark.parametrize("alpha", [5.0, -5.0])
def test_gradient_moves_selectivity_the_way_alpha_says(alpha: float) -> None:
    g = torch.Generator().manual_seed(0)
    x = torch.randn(256, 6, generator=g)
    y = torch.arange(256) % 4
    x[torch.arange(256), y] += 1.5
    torch.manual_seed(0)
    model = MLP(6, (16,), 4)
    term = SelectivityTerm(alpha, ("hidden1",), 4)
    before = _mean_si(model, x, y)
    opt = torch.optim.SGD(model.parameters(), lr=0.05)
    with captured_activations(model, term.layers) as acts:
        for _ in range(20):
            opt.zero_grad()
            model(x)
            term(model, acts, y).backward()  # the regularizer alone: its gradient's direction
            opt.step()
    after = _mean_si(model, x, y)
    if alpha > 0:
        assert after > before + 0.02
    else:
        assert after < before - 0.02


def test_switched_off_terms_are_not_built() -> None:
    model = MLP(4, (8, 8), 3)
    assert build_regularizers(TrainingSpec(), model, 3) == []
    (term,) = build_regularizers(TrainingSpec(selectivity=Selectivity(alpha=-2)), model, 3)
    assert term.layers == ("hidden1", "hidden2") and term.alpha == -2
    (term,) = build_regularizers(
        TrainingSpec(selectivity=Selectivity(alpha=1, layers=("hidden2",))), model, 3
    )
    assert term.layers == ("hidden2",)


def test_capture_keeps_the_graph_and_removes_its_hooks() -> None:
    model = MLP(4, (8,), 3)
    with captured_activations(model, ["hidden1"]) as acts:
        model(torch.randn(5, 4))
        assert acts["hidden1"].requires_grad
    assert all(not m._forward_hooks for m in model.modules())
    with pytest.raises(RuntimeError), captured_activations(model, ["hidden1"]):
        raise RuntimeError("boom")
    assert all(not m._forward_hooks for m in model.modules())
