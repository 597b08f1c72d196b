from __future__ import annotations

import numpy as np
import pytest
import torch

from falsify.data import load_dataset
from falsify.data.synthetic import SyntheticData
from falsify.interventions import (
    ablated,
    ablation_effects,
    class_ablation_effects,
    cluster_masks,
    fill_values,
    random_masks,
    resolve_k,
    top_k_masks,
)
from falsify.models.planted import planted_model

SPEC = SyntheticData(kind="synthetic", noise=0.1, n_samples=800)


def test_top_k_picks_the_highest_scores_nested_with_ties_by_index() -> None:
    scores = torch.tensor([0.1, 0.9, 0.5, 0.9, -1.0, 0.3])
    masks = top_k_masks(scores, [1, 2, 3, 6])
    assert masks[0].nonzero().flatten().tolist() == [1]  # tie 1 vs 3: lower index first
    assert masks[1].nonzero().flatten().tolist() == [1, 3]
    assert masks[2].nonzero().flatten().tolist() == [1, 2, 3]
    assert masks[3].all()
    with pytest.raises(ValueError, match="between 1 and the layer's 6 units"):
        top_k_masks(scores, [7])


def test_random_groups_have_size_k_are_seeded_and_uniform() -> None:
    masks = random_masks(10, 3, 5000, torch.Generator().manual_seed(1))
    assert (masks.sum(dim=1) == 3).all()
    again = random_masks(10, 3, 5000, torch.Generator().manual_seed(1))
    assert torch.equal(masks, again)
    assert not torch.equal(masks, random_masks(10, 3, 5000, torch.Generator().manual_seed(2)))
    # Each unit is in a group with probability k/n = 0.3: binomial(5000, 0.3) counts, sd ≈ 32.4.
    counts = masks.sum(dim=0).double()
    assert ((counts - 1500).abs() < 5 * 32.4).all()
    # Every one of the C(10, 3) = 120 subsets turns up (5000 draws: each is missed w.p. ~1e-18).
    assert len({tuple(r.nonzero().flatten().tolist()) for r in masks}) == 120


def test_cluster_masks_partition_the_units() -> None:
    masks = cluster_masks(np.array([2, 0, 1, 2, 0]), 3)
    assert masks.tolist() == [
        [False, True, False, False, True],
        [False, False, True, False, False],
        [True, False, False, True, False],
    ]
    with pytest.raises(ValueError):
        cluster_masks(np.array([0, 3]), 3)


@pytest.mark.parametrize(
    "k,n,expected", [(3, 10, 3), (0.25, 10, 2), (0.26, 10, 3), (0.01, 10, 1), (0.5, 64, 32)]
)
def test_resolve_k(k, n, expected) -> None:
    assert resolve_k(k, n) == expected


def test_per_class_effects_match_a_plain_loop_and_the_pooled_effect() -> None:
    model, _ = planted_model(SPEC)
    data = load_dataset(SPEC)
    x, y = data.x_test, data.y_test
    masks = random_masks(10, 4, 12, torch.Generator().manual_seed(0))
    per_class = class_ablation_effects(model, "hidden1", x, y, masks, SPEC.n_classes)
    assert per_class.shape == (12, SPEC.n_classes)
    fill = fill_values(model, "hidden1", x, "zero")
    with torch.no_grad():
        base = model(x).argmax(1) == y
        for g, mask in enumerate(masks):
            with ablated(model, "hidden1", mask, fill):
                hit = model(x).argmax(1) == y
            for c in range(SPEC.n_classes):
                sel = y == c
                expected = base[sel].double().mean() - hit[sel].double().mean()
                assert per_class[g, c].item() == pytest.approx(expected.item(), abs=1e-6)
    # Weighting by class frequency gives back the pooled effect.
    freq = torch.bincount(y, minlength=SPEC.n_classes).float() / len(y)
    pooled = ablation_effects(model, "hidden1", x, y, masks)
    assert torch.allclose(per_class @ freq, pooled, atol=1e-6)
    assert pooled.abs().max() > 0


def test_per_class_damage_of_an_essential_unit_falls_on_its_class() -> None:
    model, roles = planted_model(SPEC)
    data = load_dataset(SPEC)
    masks = torch.zeros(len(roles["essential"]), 10, dtype=torch.bool)
    for i, u in enumerate(roles["essential"]):
        masks[i, u] = True
    per_class = class_ablation_effects(
        model, "hidden1", data.x_test, data.y_test, masks, SPEC.n_classes
    )
    for i in range(len(roles["essential"])):
        # Essential unit i is the only route for class i (planted_model's construction).
        assert per_class[i, i] > 0.8
        others = torch.cat([per_class[i, :i], per_class[i, i + 1 :]])
        assert others.abs().max() < 0.05
