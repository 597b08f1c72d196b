from __future__ import annotations

import numpy as np
import pytest
import torch
from sklearn.metrics import adjusted_rand_score
from torch import nn

from falsify.data import load_dataset
from falsify.data.synthetic import SyntheticData
from falsify.errors import FalsifyError
from falsify.interventions import class_ablation_effects, cluster_masks
from falsify.measures.clusterability import (
    Coclusters,
    cluster_layer,
    clusterability,
    cocluster,
    edge_weights,
    enmeshment,
    model_clusterability,
    random_partition_clusterability,
    shuffled_clusterability,
    weight_module,
)
from falsify.measures.specialization import (
    cluster_damage,
    specialization,
    specialization_vs_random,
)
from falsify.models.mlp import MLPSpec, build_mlp
from falsify.models.planted import planted_model

ROWS, COLS = (40, 60, 100), (30, 70, 100)  # unequal blocks: output × input units per cluster


def _planted_blocks(
    seed: int = 0, noise: float = 0.02
) -> tuple[torch.Tensor, np.ndarray, np.ndarray]:
    """A weight matrix with block structure, rows and columns shuffled; the true labels."""
    g = torch.Generator().manual_seed(seed)
    rows = np.repeat(np.arange(3), ROWS)
    cols = np.repeat(np.arange(3), COLS)
    sign = torch.where(torch.rand(len(rows), len(cols), generator=g) < 0.5, -1.0, 1.0)
    w = noise * torch.randn(len(rows), len(cols), generator=g)
    inside = torch.as_tensor(rows[:, None] == cols[None, :])
    w = torch.where(inside, sign * (0.5 + 0.5 * torch.rand(w.shape, generator=g)), w)
    pr = torch.randperm(len(rows), generator=g)
    pc = torch.randperm(len(cols), generator=g)
    return w[pr][:, pc], rows[pr.numpy()], cols[pc.numpy()]


def test_coclustering_recovers_planted_blocks_and_clusterability_is_near_one() -> None:
    w, rows, cols = _planted_blocks()
    found = cocluster(w.abs(), 3, seed=0)
    assert adjusted_rand_score(rows, found.rows) == 1.0
    assert adjusted_rand_score(cols, found.cols) == 1.0
    c = clusterability(w, found).item()
    # Hand bound: off-block entries are N(0, 0.02²), on-block |w| ≥ 0.5, so C > 0.99.
    assert c > 0.99
    baseline = random_partition_clusterability(found)
    # Σ_c r_c s_c / (R S) for the planted sizes.
    assert baseline == pytest.approx((40 * 30 + 60 * 70 + 100 * 100) / (200 * 200))


def test_shuffled_copy_is_near_its_random_baseline() -> None:
    w, _, _ = _planted_blocks()
    g = torch.Generator().manual_seed(1)
    shuffled = w.flatten()[torch.randperm(w.numel(), generator=g)].view_as(w)
    found = cocluster(shuffled.abs(), 3, seed=0)
    c = clusterability(shuffled, found).item()
    baseline = random_partition_clusterability(found)
    planted = cocluster(w.abs(), 3, seed=0)
    planted_excess = clusterability(w, planted).item() - random_partition_clusterability(planted)
    assert planted_excess > 0.5
    # Near: less than a fifth of the planted matrix's excess over its baseline. Co-clustering
    # searches for the partition, so on a structureless matrix it still lands a little above a
    # random one (see shuffled_clusterability).
    assert 0 <= c - baseline < 0.2 * planted_excess


def test_shuffled_null_sits_between_the_random_partition_and_the_planted_matrix() -> None:
    w, _, _ = _planted_blocks()
    small = w[:60, :55]  # a smaller layer: the clusterer's search matters more
    null = shuffled_clusterability(small, 3, 3, torch.Generator().manual_seed(0))
    found = cocluster(small.abs(), 3)
    assert (null > random_partition_clusterability(found)).all()
    assert (null < clusterability(small, found).item()).all()
    again = shuffled_clusterability(small, 3, 3, torch.Generator().manual_seed(0))
    assert np.array_equal(null, again)


def test_random_partition_baseline_is_the_monte_carlo_mean() -> None:
    w, _, _ = _planted_blocks()
    w = w[:40, :30]
    found = Coclusters(np.arange(40) % 3, np.arange(30) % 4 % 3, 3)  # unequal column sizes
    g = np.random.default_rng(0)
    sims = [
        clusterability(
            w, Coclusters(g.permutation(found.rows), g.permutation(found.cols), 3)
        ).item()
        for _ in range(2000)
    ]
    se = np.std(sims) / np.sqrt(len(sims))
    assert abs(np.mean(sims) - random_partition_clusterability(found)) < 5 * se
    equal = Coclusters(np.arange(12) % 4, np.arange(8) % 4, 4)
    assert random_partition_clusterability(equal) == pytest.approx(1 / 4)


def test_clusterability_by_hand() -> None:
    w = torch.tensor([[1.0, 2.0], [3.0, -4.0]])
    clusters = Coclusters(np.array([0, 1]), np.array([0, 1]), 2)
    # Inside: 1² + 4² = 17 of 1 + 4 + 9 + 16 = 30.
    assert clusterability(w, clusters).item() == pytest.approx(17 / 30)
    assert enmeshment(w, clusters).item() == pytest.approx(13 / 30)


def test_enmeshment_gradient_lowers_out_of_cluster_mass() -> None:
    g = torch.Generator().manual_seed(0)
    w = torch.randn(20, 15, generator=g, requires_grad=True)
    clusters = Coclusters(np.arange(20) % 3, np.arange(15) % 3, 3)
    outside = ~clusters.same_cluster()
    loss = enmeshment(w, clusters)
    loss.backward()
    # Analytic: ∂C/∂W_ij = 2 W_ij (1[same cluster] − C) / Σ W², and the penalty is 1 − C.
    with torch.no_grad():
        c = clusterability(w, clusters)
        expected = -2 * w * (clusters.same_cluster().float() - c) / (w**2).sum()
    assert torch.allclose(w.grad, expected, atol=1e-7)
    with torch.no_grad():
        stepped = w - 5.0 * w.grad
        before = (w**2)[outside].sum() / (w**2).sum()
        after = (stepped**2)[outside].sum() / (stepped**2).sum()
    assert after < before
    assert ((stepped**2)[outside].sum() < (w**2)[outside].sum()).item()


def test_conv_layer_uses_the_channel_norm_matrix() -> None:
    w, rows, cols = _planted_blocks(noise=0.01)
    conv = nn.Conv2d(w.shape[1], w.shape[0], 3, bias=False)
    with torch.no_grad():
        kernel = torch.rand(*w.shape, 3, 3, generator=torch.Generator().manual_seed(2))
        conv.weight.copy_(w[:, :, None, None] * kernel)
    sq = edge_weights(conv.weight)
    assert torch.allclose(sq, (conv.weight**2).sum(dim=(2, 3)))
    model = nn.Sequential(conv)
    found = cluster_layer(model, "0", 3)
    assert adjusted_rand_score(rows, found.rows) == 1.0
    assert adjusted_rand_score(cols, found.cols) == 1.0


def test_model_clusterability_over_named_layers() -> None:
    torch.manual_seed(0)
    model = build_mlp(MLPSpec(kind="mlp", hidden=(16, 12)), (20,), 4)
    table = model_clusterability(model, ["hidden1", "hidden2.linear"], 3)
    assert list(table["layer"]) == ["hidden1", "hidden2.linear", "mean"]
    assert table["clusterability"].iloc[2] == pytest.approx(table["clusterability"][:2].mean())
    assert ((table["clusterability"] > 0) & (table["clusterability"] < 1)).all()
    with_null = model_clusterability(
        model, ["hidden1"], 3, shuffle_draws=2, generator=torch.Generator().manual_seed(0)
    )
    assert with_null["clusterability"][0] == table["clusterability"][0]
    assert 0 < with_null["shuffled_baseline"][0] < 1
    with pytest.raises(ValueError, match=r"needs a torch\.Generator"):
        model_clusterability(model, ["hidden1"], 3, shuffle_draws=2)
    with pytest.raises(FalsifyError, match="must be a linear or conv layer"):
        weight_module(model, "flatten")
    with pytest.raises(ValueError, match=r"n_clusters must lie in 2\.\.12"):
        cluster_layer(model, "hidden2", 13)


def test_specialization_statistics_by_hand() -> None:
    damage = np.array(
        [
            [0.5, 0.0, 0.0, 0.0],  # all on one class
            [0.1, 0.1, 0.1, 0.1],  # even
            [0.3, 0.1, -0.2, 0.0],  # a class that improved counts as undamaged
            [0.0, -0.1, 0.0, 0.0],  # no damage at all
        ]
    )
    top = specialization(damage, "top_share")
    assert top[:3] == pytest.approx([1.0, 0.25, 0.75]) and np.isnan(top[3])
    assert specialization(damage, "top_share", m=2)[1] == pytest.approx(0.5)
    gini = specialization(damage, "gini")
    # One-hot over n = 4: (n − 1)/n. Row 3: d⁺ = (0.3, 0.1, 0, 0); over ordered pairs
    # Σ|d_i − d_j| = 2 · (0.2 + 0.3 + 0.3 + 0.1 + 0.1) = 2.0 and mean 0.1, so 2.0 / 3.2; the same
    # as the sorted form 2 Σ i·x_(i) / (n Σ x) − (n + 1)/n = 2 · 1.5 / 1.6 − 1.25 = 0.625.
    assert gini[:3] == pytest.approx([0.75, 0.0, 0.625]) and np.isnan(gini[3])


SPEC = SyntheticData(kind="synthetic", noise=0.1, n_samples=800)


def _class_clusters() -> Coclusters:
    """The planted model's hidden units clustered by the class (input feature) they read."""
    model, _ = planted_model(SPEC)
    reads = model.hidden1.linear.weight.argmax(dim=1).numpy()  # one input feature per unit
    return Coclusters(reads, np.arange(SPEC.n_features) % SPEC.n_classes, SPEC.n_classes)


def test_cluster_damage_is_the_per_class_effect_of_each_cluster() -> None:
    model, _ = planted_model(SPEC)
    data = load_dataset(SPEC)
    clusters = _class_clusters()
    damage = cluster_damage(model, "hidden1", data.x_test, data.y_test, clusters, SPEC.n_classes)
    masks = cluster_masks(clusters.rows, clusters.n_clusters)
    direct = class_ablation_effects(model, "hidden1", data.x_test, data.y_test, masks, 4)
    assert torch.equal(damage, direct)
    # Each class's units are its only route: ablating cluster k fails class k and no other;
    # except the last class, which a silent network predicts anyway (planted_model's bias).
    assert (damage.diagonal()[:-1] > 0.8).all()
    off = damage - torch.diag(damage.diagonal())
    assert off.abs().max() < 0.05
    assert damage[-1].abs().max() < 0.05


def test_class_clusters_specialize_more_than_random_groups() -> None:
    model, _ = planted_model(SPEC)
    data = load_dataset(SPEC)
    table = specialization_vs_random(
        model,
        "hidden1",
        data.x_test,
        data.y_test,
        _class_clusters(),
        SPEC.n_classes,
        draws=200,
        generator=torch.Generator().manual_seed(0),
    )
    # Sizes: essential + selective unit, or 2 redundant copies + selective unit.
    assert list(table["size"]) == [2, 2, 3, 3]
    spec = table["specialization"].to_numpy()
    # The last class's cluster damages nothing (see above): its statistic is undefined.
    assert (spec[:-1] > 0.95).all() and np.isnan(spec[-1])
    # A random pair or triple sometimes spans two classes' only routes, so it specializes less.
    assert (table["random_mean"][:-1] < spec[:-1]).all()
    assert (table["difference"][:-1] > 0).all()
    assert (table["random_defined"] > 0).all()
