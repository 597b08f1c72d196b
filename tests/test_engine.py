from __future__ import annotations

import pytest
import torch
from captum.attr import LayerFeatureAblation
from torch import nn
from torch.nn import functional as F

from falsify.data import load_dataset
from falsify.data.digits import DigitsData
from falsify.hypothesis.schema import Population, TrainingSpec
from falsify.interventions import ablation_effects, fill_values, get_layer, single_unit_masks
from falsify.interventions.engine import ablation_sweep, plan_strategy
from falsify.models.cnn import CNNSpec
from falsify.models.mlp import MLPSpec
from falsify.models.resnet import ResNet20
from falsify.models.training import train_replicate


@pytest.fixture(scope="module")
def mlp():
    pop = Population(
        data=DigitsData(kind="digits"),
        model=MLPSpec(kind="mlp", hidden=(12, 10, 8)),
        training=TrainingSpec(epochs=4, lr=0.01),
        seeds=2,
    )
    data = load_dataset(pop.data)
    return train_replicate(pop, data, 0, torch.device("cpu")).model, data


class Residual(nn.Module):
    """Not a chain: ``block`` is skipped over, so only the hook path is exact."""

    def __init__(self) -> None:
        super().__init__()
        self.inp = nn.Linear(64, 16)
        self.block = nn.Sequential(nn.Linear(16, 16), nn.ReLU())
        self.head = nn.Linear(16, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = torch.relu(self.inp(x.flatten(1)))
        return self.head(self.block(h) + h)


def conv_net() -> nn.Sequential:
    """A chain whose layer output has spatial dimensions (channels are the units)."""
    return nn.Sequential(
        nn.Conv2d(1, 6, 3),
        nn.ReLU(),
        nn.Conv2d(6, 4, 3),
        nn.ReLU(),
        nn.Flatten(),
        nn.Linear(4 * 4 * 4, 10),
    )


def captum_reference(model, layer, x, y, groups, n_groups, value, metric) -> torch.Tensor:
    """captum's LayerFeatureAblation; with a scalar forward it reports f(intact) − f(ablated)."""

    def forward(inp: torch.Tensor) -> torch.Tensor:
        out = model(inp)
        if metric == "accuracy_drop":
            return (out.argmax(1) == y).double().mean()
        return -F.cross_entropy(out.double(), y)

    baselines = None if value == "zero" else fill_values(model, layer, x, "mean").unsqueeze(0)
    attr = LayerFeatureAblation(forward, get_layer(model, layer)).attribute(
        x, layer_mask=groups.unsqueeze(0), layer_baselines=baselines
    )[0]
    # One attribution per unit, equal within a group: read it once per group.
    flat = attr.reshape(attr.shape[0], -1)[:, 0] if attr.dim() > 1 else attr
    first = [int((groups == g).nonzero()[0]) for g in range(n_groups)]
    return flat[first].double()


def partition_masks(groups: torch.Tensor, n_groups: int) -> torch.Tensor:
    return torch.stack([groups == g for g in range(n_groups)])


CASES = [
    # (layer, strategy the planner must pick, unit grouping: 1 = single units, 2 = pairs)
    ("hidden2", "rank_one", 1),
    ("hidden2", "rank_one", 2),
    ("hidden3.act", "rank_one", 1),  # through hidden3.drop (identity) to the head
    ("hidden1.linear", "split", 1),  # followed by identity norm, then ReLU: not linear
]


@pytest.mark.parametrize("layer,expected_strategy,width", CASES)
@pytest.mark.parametrize("value", ["zero", "mean"])
@pytest.mark.parametrize("metric", ["accuracy_drop", "loss_increase"])
def test_every_path_equals_captum_and_the_hook_loop(
    mlp, layer, expected_strategy, width, value, metric
) -> None:
    model, data = mlp
    x, y = data.x_test, data.y_test
    assert plan_strategy(model, layer, x)[0] == expected_strategy
    n_units = fill_values(model, layer, x, "zero").shape[0]
    groups = torch.arange(n_units) // width
    n_groups = int(groups.max()) + 1
    masks = partition_masks(groups, n_groups)
    reference = captum_reference(model, layer, x, y, groups, n_groups, value, metric)
    loop = ablation_effects(model, layer, x, y, masks, value=value, metric=metric, batched=False)
    assert reference.abs().max() > 0  # the comparison is not between two zero vectors
    for strategy in ("auto", expected_strategy, "split", "hooks"):
        ours = ablation_effects(
            model, layer, x, y, masks, value=value, metric=metric, strategy=strategy
        )
        assert torch.allclose(ours.double(), reference, atol=1e-6), strategy
        assert torch.allclose(ours, loop, atol=1e-6), strategy


@pytest.mark.parametrize("strategy", ["auto", "rank_one", "split", "hooks"])
def test_overlapping_group_masks_equal_the_hook_loop(mlp, strategy) -> None:
    model, data = mlp
    x, y = data.x_test, data.y_test
    masks = torch.rand(7, 10, generator=torch.Generator().manual_seed(1)) < 0.4
    masks[0] = False  # the empty ablation changes nothing
    masks[1] = True  # the whole layer at once
    kwargs = {"value": "mean", "metric": "loss_increase"}
    loop = ablation_effects(model, "hidden2", x, y, masks, batched=False, **kwargs)
    ours = ablation_effects(model, "hidden2", x, y, masks, strategy=strategy, **kwargs)
    assert torch.allclose(ours, loop, atol=1e-6)
    assert ours[0] == 0
    assert ours[1] > 0


@pytest.mark.parametrize("max_bytes,batch_size", [(1, 1000), (50_000, 37), (1 << 30, 4096)])
def test_chunking_to_the_memory_budget_changes_nothing(mlp, max_bytes, batch_size) -> None:
    model, data = mlp
    x, y = data.x_test, data.y_test
    masks = single_unit_masks(10)
    fill = fill_values(model, "hidden2", x, "zero")
    ref = ablation_sweep(model, "hidden2", x, y, masks, fill)
    res = ablation_sweep(
        model, "hidden2", x, y, masks, fill, max_bytes=max_bytes, batch_size=batch_size
    )
    assert torch.allclose(res.ablated, ref.ablated, atol=1e-9)
    if max_bytes == 1:
        assert res.chunk_rows == 1  # the budget, not max_rows, set the chunk
    assert res.chunk_rows <= max(1, max_bytes // 64)


def test_examples_already_at_the_fill_value_are_skipped(mlp) -> None:
    model, data = mlp
    x, y = data.x_test, data.y_test
    masks = single_unit_masks(10)
    fill = fill_values(model, "hidden2", x, "zero")
    res = ablation_sweep(model, "hidden2", x, y, masks, fill)
    with torch.no_grad():
        h = model.hidden2(model.hidden1(model.flatten(x)))
    # A ReLU unit that is off is already ablated to zero: only active (unit, example) pairs run.
    assert res.rows_evaluated == int((h != 0).sum())
    assert res.rows_evaluated < masks.shape[0] * len(x)


@pytest.mark.parametrize("layer,expected", [("1", "conv_delta"), ("3", "split")])
def test_sequential_conv_net_equals_the_hook_loop(layer, expected) -> None:
    torch.manual_seed(0)
    model = conv_net().eval()
    data = load_dataset(DigitsData(kind="digits"))
    x, y = data.x_test[:200], data.y_test[:200]
    # Channels are the units; a conv next takes the conv update, a flatten next does not.
    assert plan_strategy(model, layer, x)[0] == expected
    n = 6 if layer == "1" else 4
    masks = single_unit_masks(n)
    for value in ("zero", "mean"):
        loop = ablation_effects(
            model, layer, x, y, masks, value=value, metric="loss_increase", batched=False
        )
        ours = ablation_effects(model, layer, x, y, masks, value=value, metric="loss_increase")
        assert torch.allclose(ours, loop, atol=1e-6)
        assert loop.abs().max() > 0


@pytest.fixture(scope="module")
def bn_cnn() -> nn.Module:
    """The built-in cnn with batch norm and dropout, briefly trained on digits."""
    pop = Population(
        data=DigitsData(kind="digits"),
        model=CNNSpec(kind="cnn", channels=(8, 6, 5), batch_norm=True, dropout=0.2),
        training=TrainingSpec(epochs=2, lr=0.01),
        seeds=2,
    )
    return train_replicate(pop, load_dataset(pop.data), 0, torch.device("cpu")).model.eval()


@pytest.mark.parametrize("value", ["zero", "mean", "resample"])
@pytest.mark.parametrize("metric", ["accuracy_drop", "loss_increase"])
@pytest.mark.parametrize("width", [1, 2])
def test_conv_update_equals_the_hook_loop_through_batch_norm_and_pooling(
    bn_cnn, value, metric, width
) -> None:
    model = bn_cnn
    data = load_dataset(DigitsData(kind="digits"))
    x, y = data.x_test[:150], data.y_test[:150]
    # conv1 and conv2 feed a conv (through dropout, identity in evaluation); conv3 a flatten.
    assert plan_strategy(model, "conv1", x)[0] == "conv_delta"
    assert plan_strategy(model, "conv2", x)[0] == "conv_delta"
    assert plan_strategy(model, "conv3", x)[0] == "split"
    masks = partition_masks(torch.arange(8) // width, 8 // width)
    kwargs = {"value": value, "metric": metric, "seed": 3}
    loop = ablation_effects(model, "conv1", x, y, masks, batched=False, **kwargs)
    for strategy, max_bytes in (("auto", 2**28), ("conv_delta", 30_000), ("split", 2**28)):
        ours = ablation_effects(
            model, "conv1", x, y, masks, strategy=strategy, max_bytes=max_bytes, **kwargs
        )
        assert torch.allclose(ours, loop, atol=1e-6), strategy
    assert loop.abs().max() > 0


@pytest.mark.parametrize("layer", ["layer1.2", "layer2.1", "layer2.2"])
@pytest.mark.parametrize("value", ["zero", "mean", "resample"])
def test_conv_update_into_a_residual_block_equals_the_hook_loop(layer, value) -> None:
    torch.manual_seed(0)
    model = ResNet20(1, 10, width=4)
    for m in model.modules():
        if isinstance(m, nn.BatchNorm2d):
            m.running_mean.normal_(0.0, 0.3)
            m.running_var.uniform_(0.5, 2.0)
    model.eval()
    data = load_dataset(DigitsData(kind="digits"))
    x, y = data.x_test[:120], data.y_test[:120]
    # layer1.2 feeds layer2.0, whose shortcut subsamples and pads the ablated input.
    assert plan_strategy(model, layer, x)[0] == "conv_delta"
    n = 4 if layer.startswith("layer1") else 8
    masks = single_unit_masks(n)
    kwargs = {"value": value, "metric": "loss_increase", "seed": 1}
    loop = ablation_effects(model, layer, x, y, masks, batched=False, **kwargs)
    ours = ablation_effects(model, layer, x, y, masks, max_bytes=40_000, **kwargs)
    assert torch.allclose(ours, loop, atol=1e-6)
    assert loop.abs().max() > 0


def test_the_conv_update_is_refused_where_no_conv_comes_next(bn_cnn) -> None:
    model = bn_cnn
    x = load_dataset(DigitsData(kind="digits")).x_test[:8]
    with pytest.raises(ValueError, match="Conv2d"):
        plan_strategy(model, "conv3", x, "conv_delta")


def test_a_model_that_is_not_a_chain_uses_hooks_and_stays_exact() -> None:
    torch.manual_seed(0)
    model = Residual().eval()
    data = load_dataset(DigitsData(kind="digits"))
    x, y = data.x_test, data.y_test
    assert plan_strategy(model, "block", x)[0] == "hooks"
    with pytest.raises(ValueError, match="chain"):
        plan_strategy(model, "block", x, "split")
    masks = single_unit_masks(16)
    loop = ablation_effects(model, "block", x, y, masks, metric="loss_increase", batched=False)
    ours = ablation_effects(model, "block", x, y, masks, metric="loss_increase")
    assert torch.allclose(ours, loop, atol=1e-6)
    assert loop.abs().max() > 0
    assert all(not m._forward_hooks for m in model.modules())


def test_an_error_inside_the_sweep_leaves_no_hook_and_the_weights_unchanged(mlp) -> None:
    model, data = mlp
    before = {k: v.clone() for k, v in model.state_dict().items()}

    def bad_stats(logits: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        raise RuntimeError("forced")

    fill = fill_values(model, "hidden2", data.x_test, "zero")
    for strategy in ("rank_one", "split", "hooks"):
        with pytest.raises(RuntimeError, match="forced"):
            ablation_sweep(
                model,
                "hidden2",
                data.x_test,
                data.y_test,
                single_unit_masks(10),
                fill,
                row_stats=bad_stats,
                strategy=strategy,
            )
        assert all(not m._forward_hooks for m in model.modules())
    for k, v in model.state_dict().items():
        assert torch.equal(v, before[k])


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
@pytest.mark.parametrize("strategy", ["rank_one", "split", "hooks"])
def test_cuda_gives_the_cpu_numbers(mlp, strategy) -> None:
    model, data = mlp
    x, y = data.x_test, data.y_test
    masks = single_unit_masks(10)
    kwargs = {"value": "mean", "metric": "loss_increase", "strategy": strategy}
    cpu = ablation_effects(model, "hidden2", x, y, masks, **kwargs)
    gpu_model = type(model)(64, (12, 10, 8), 10)
    gpu_model.load_state_dict(model.state_dict())
    cuda = torch.device("cuda")
    gpu = ablation_effects(gpu_model.to(cuda), "hidden2", x.to(cuda), y.to(cuda), masks, **kwargs)
    assert torch.allclose(gpu.cpu(), cpu, atol=1e-5)
