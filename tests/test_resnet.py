"""CIFAR-style ResNet-20: architecture, named layers, and ablation through residual connections."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from falsify.cli.main import main
from falsify.interventions import ablated, ablation_effects, capture, single_unit_masks
from falsify.interventions.engine import _plan_conv, plan_strategy
from falsify.measures import class_conditional_means, selectivity_index
from falsify.models import build_model
from falsify.models.resnet import BasicBlock, FoldedConv, ResNet20, ResNet20Spec


@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    # Small convolutions are far slower with 2 threads on a busy 2-core machine.
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def test_resnet20_matches_the_paper() -> None:
    model = build_model(ResNet20Spec(kind="resnet20"), (3, 32, 32), 10)
    weighted = [m for m in model.modules() if isinstance(m, nn.Conv2d | nn.Linear)]
    assert len(weighted) == 20  # 6n + 2 with n = 3 (He et al. 2016, §4.2)
    # 0.27M parameters (He et al. 2016, Table 6); 269,722 exactly for the option-A shortcut, as
    # printed by github.com/akamaster/pytorch_resnet_cifar10 (`python resnet.py`).
    assert sum(p.numel() for p in model.parameters()) == 269_722
    x = torch.rand(2, 3, 32, 32)
    expected = {"layer1.2": (16, 32, 32), "layer2.0": (32, 16, 16), "layer3.2": (64, 8, 8)}
    for layer, shape in expected.items():
        with capture(model, layer) as outs:
            assert model(x).shape == (2, 10)
        assert tuple(outs[0].shape[1:]) == shape
        assert outs[0].min() >= 0  # block outputs are post-ReLU


def test_resnet20_takes_grey_inputs_and_rejects_flat_ones() -> None:
    model = build_model(ResNet20Spec(kind="resnet20", width=4), (1, 8, 8), 10)
    assert model(torch.rand(3, 1, 8, 8)).shape == (3, 10)
    from falsify.errors import FalsifyError

    with pytest.raises(
        FalsifyError, match=r"takes images.*Got 'resnet20 for inputs of shape \[16\]'"
    ):
        build_model(ResNet20Spec(kind="resnet20"), (16,), 4)


@pytest.fixture(scope="module")
def small_resnet():
    torch.manual_seed(0)
    model = build_model(ResNet20Spec(kind="resnet20", width=4), (3, 12, 12), 5).eval()
    # Non-trivial batch-norm statistics, so eval-mode outputs are not a plain rescaling.
    for m in model.modules():
        if isinstance(m, nn.BatchNorm2d):
            m.running_mean.uniform_(-0.2, 0.2)
            m.running_var.uniform_(0.5, 1.5)
    x = torch.rand(40, 3, 12, 12)
    y = torch.arange(40) % 5
    return model, x, y


def _plain_loop(model, layer, x, y, masks, fill) -> torch.Tensor:
    """One ordinary forward per ablation, with the scoped hook: the reference."""
    base = nn.functional.cross_entropy(model(x), y, reduction="mean").double()
    out = []
    for mask in masks:
        with ablated(model, layer, mask, fill):
            out.append(nn.functional.cross_entropy(model(x), y).double() - base)
    return torch.stack(out)


@pytest.mark.parametrize(
    "layer,batched_expected",
    [
        ("layer1.0", True),  # block outputs: every later skip starts after the hook
        ("layer2.0", True),
        ("layer3.2", True),
        ("layer1.1.conv1", False),  # the block's own shortcut skips over this one
        ("layer2.0.bn2", False),
    ],
)
def test_channel_ablation_through_residual_connections(
    small_resnet, layer, batched_expected
) -> None:
    model, x, y = small_resnet
    with capture(model, layer) as outs:
        model(x[:1])
    n_channels = outs[0].shape[1]
    masks = single_unit_masks(n_channels)
    # Inside a block a shortcut skips over the layer: only the generic hook path is exact.
    strategy, _ = plan_strategy(model, layer, x[:8], "auto")
    assert (strategy != "hooks") == batched_expected
    fast = ablation_effects(model, layer, x, y, masks, metric="loss_increase", batch_size=16)
    loop = ablation_effects(
        model, layer, x, y, masks, metric="loss_increase", batch_size=16, batched=False
    )
    fill = torch.zeros_like(outs[0][0])
    reference = _plain_loop(model, layer, x, y, masks, fill)
    assert torch.allclose(fast.double(), reference, atol=1e-5)
    assert torch.allclose(loop.double(), reference, atol=1e-5)
    assert reference.abs().max() > 1e-4  # the ablations do change the loss


def test_selectivity_on_spatially_averaged_channels(small_resnet) -> None:
    model, x, y = small_resnet
    means = class_conditional_means(model, "layer2.1", x, y, 5)
    with capture(model, "layer2.1") as outs:
        model(x)
    by_hand = torch.stack([outs[0][y == k].mean(dim=(0, 2, 3)) for k in range(5)])
    assert means.shape == (5, 8) and torch.allclose(means, by_hand, atol=1e-6)
    si = selectivity_index(means)
    assert si.shape == (8,) and (si >= 0).all() and (si <= 1).all()


def test_resnet20_end_to_end(write, tiny_yaml, tmp_path, capsys) -> None:
    text = tiny_yaml.replace("{kind: mlp, hidden: [16]}", "{kind: resnet20, width: 4}")
    text = text.replace("epochs: 3", "epochs: 1").replace("seeds: 3", "seeds: 2")
    path = write(text.replace("layers: [hidden1]", "layers: [layer1.0, layer3.2]"))
    out, cache = tmp_path / "r", tmp_path / "c"
    assert main(["run", str(path), "--out", str(out), "--cache", str(cache), "--quiet"]) == 0
    assert "tiny" in capsys.readouterr().out
    report = (out / "tiny.md").read_text()
    rows = report.split("## Per replicate")[1].split("##")[0]
    units = {
        r.split("|")[1].strip(): int(r.split("|")[4]) for r in rows.splitlines() if "| layer" in r
    }
    assert units == {"layer1.0": 4, "layer3.2": 16}


@pytest.mark.parametrize(
    "c_in,c_out,stride,size", [(8, 8, 1, 2), (4, 8, 2, 4), (8, 8, 1, 4), (4, 8, 2, 8)]
)
def test_the_folded_block_equals_the_block_to_rounding(c_in, c_out, stride, size) -> None:
    # The ablation engine's conv_delta path runs the blocks after the ablated one folded
    # (docs/performance.md): batch norm in the conv weights, 2×2 maps as a dense product.
    torch.manual_seed(0)
    block = BasicBlock(c_in, c_out, stride)
    for bn in (block.bn1, block.bn2):
        bn.running_mean.normal_(0.0, 0.3)
        bn.running_var.uniform_(0.5, 2.0)
        bn.weight.data.uniform_(0.5, 1.5)
        bn.bias.data.normal_(0.0, 0.2)
    block.eval()
    x = torch.randn(32, c_in, size, size).relu()
    with torch.no_grad():
        want = block(x)
        folded = block.folded()
        got = folded(x)
        assert torch.allclose(got, want, rtol=1e-5, atol=1e-5)
        assert torch.allclose(folded.after_conv1(x, folded.conv1(x)), want, rtol=1e-5, atol=1e-5)
    assert got.shape == want.shape


@pytest.mark.parametrize("layer", ["layer1.2", "layer2.1", "layer3.0"])
@pytest.mark.parametrize("metric", ["accuracy_drop", "loss_increase"])
def test_the_folded_conv_update_equals_the_hook_loop_at_full_width(layer, metric) -> None:
    # layer1.2 feeds the stride-2 block layer2.0 (its shortcut subsamples and pads); layer3.0
    # feeds a block on 2×2 maps, whose convs run as dense products.
    torch.manual_seed(0)
    model = ResNet20(1, 10)
    for m in model.modules():
        if isinstance(m, nn.BatchNorm2d):
            m.running_mean.normal_(0.0, 0.3)
            m.running_var.uniform_(0.5, 2.0)
    model.head.weight.data.normal_(0.0, 0.3)  # predictions that depend on the features
    model.eval()
    x = torch.rand(200, 1, 8, 8) * 16
    with torch.no_grad():
        y = model(x).argmax(dim=1)  # labels the model gets right: ablations change accuracy
    name, chain = plan_strategy(model, layer, x)
    assert name == "conv_delta" and chain is not None
    with torch.no_grad():
        assert isinstance(_plan_conv(chain, chain.next_conv() or 0, x).conv, FoldedConv)
    n = {"layer1.2": 16, "layer2.1": 32, "layer3.0": 64}[layer]
    # Single channels (the one-channel update) and quarters of the layer (the general one).
    masks = torch.cat(
        [single_unit_masks(n)[:4], torch.stack([torch.arange(n) * 4 // n == q for q in range(4)])]
    )
    loop = ablation_effects(model, layer, x, y, masks, metric=metric, batched=False)
    ours = ablation_effects(model, layer, x, y, masks, metric=metric)
    assert torch.allclose(ours, loop, atol=1e-6)
    assert loop.abs().max() > 0
