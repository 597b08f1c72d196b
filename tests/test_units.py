"""Unit views (falsify/units.py): where a layer's units live, read the same by every consumer;
the resample fill against a plain forward-hook loop written here."""

from __future__ import annotations

from typing import Any

import pytest
import torch
from torch import nn

from falsify.data import load_dataset
from falsify.data.digits import DigitsData
from falsify.errors import FalsifyError, LocatedError
from falsify.hypothesis import load
from falsify.interventions import (
    ablated,
    ablation_effects,
    class_ablation_effects,
    fill_values,
    resample_sources,
    single_unit_masks,
)
from falsify.interventions.curves import ablation_curves, random_orders
from falsify.interventions.engine import plan_strategy
from falsify.interventions.perturb import unit_spread
from falsify.measures import attribution_scores, class_conditional_means
from falsify.measures.selectivity import unit_activations
from falsify.models import build_model
from falsify.models.cnn import CNNSpec
from falsify.models.mlp import MLPSpec
from falsify.models.regularizers import batch_selectivity
from falsify.runner.cache import ModelCache
from falsify.runner.run import plan
from falsify.selectivity import selectivity_index
from falsify.units import CHANNELS, UnitView, unit_view, weight_module

T, C = 3, 4  # tokens, channels of the token layer


class Tokens(nn.Module):
    """``[batch, 3, 2]`` → ``mix`` ReLU(Linear) per token ``[batch, 3 tokens, 4 channels]`` →
    mean over tokens → ``head``; ``mix`` holds [x0, x1, −x0, −x1] per token, post-ReLU."""

    def __init__(self, view: UnitView) -> None:
        super().__init__()
        self.mix = nn.Sequential(nn.Linear(2, C), nn.ReLU())
        self.head = nn.Linear(C, 2)
        with torch.no_grad():
            self.mix[0].weight.copy_(torch.tensor([[1.0, 0], [0, 1], [-1, 0], [0, -1]]))
            self.mix[0].bias.zero_()
            self.head.weight.copy_(torch.tensor([[1.0, -1, 0.5, 2], [-1, 1, 1, -0.5]]))
            self.head.bias.zero_()
        self.unit_views = {"mix": view}

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.mix(x).mean(dim=1))


def _data() -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(0)
    x = torch.randn(40, T, 2, generator=g)
    return x, (x[:, :, 0].sum(dim=1) > 0).long()


def _mix(x: torch.Tensor) -> torch.Tensor:  # by hand: [batch, tokens, channels]
    return torch.relu(torch.cat([x, -x], dim=-1))


def _hook_count(model: nn.Module) -> int:
    return sum(len(m._forward_hooks) for m in model.modules())


def test_views_read_units_from_each_shape() -> None:
    flat = torch.arange(6.0).view(2, 3)
    assert torch.equal(CHANNELS.read(flat), flat) and CHANNELS.n_units(flat) == 3
    conv = torch.arange(2 * 3 * 2 * 2.0).view(2, 3, 2, 2)
    assert torch.equal(CHANNELS.read(conv), conv.mean(dim=(2, 3)))
    assert torch.equal(UnitView(1, position=3).read(conv), conv[:, :, 1, 1])
    tokens = torch.arange(2 * T * C * 1.0).view(2, T, C)
    assert UnitView(-1).n_units(tokens) == C
    assert torch.equal(UnitView(-1).read(tokens), tokens.mean(dim=1))
    assert torch.equal(UnitView(-1, position=2).read(tokens), tokens[:, 2])
    mask = torch.tensor([False, True, False, False])
    out = UnitView(-1, position=2).apply(tokens, mask, torch.zeros(T, C))
    expected = tokens.clone()
    expected[:, 2, 1] = 0
    assert torch.equal(out, expected)
    with pytest.raises(FalsifyError, match=r"'position' must lie in 0\.\.2"):
        UnitView(-1, position=3).read(tokens)


@pytest.mark.parametrize("position", [None, 1])
def test_selectivity_attribution_and_ablation_read_channels_not_positions(position) -> None:
    x, y = _data()
    model = Tokens(UnitView(-1, position=position)).eval()
    h = _mix(x)  # [batch, tokens, channels]
    per_unit = h.mean(dim=1) if position is None else h[:, position]  # [batch, channels]
    means = class_conditional_means(model, "mix", x, y, 2)
    expected = torch.stack([per_unit[y == k].mean(dim=0) for k in (0, 1)])
    assert means.shape == (2, C)
    torch.testing.assert_close(means, expected)
    act = model.mix(x)
    si = batch_selectivity(act, y, 2, view=unit_view(model, "mix"))
    torch.testing.assert_close(si, selectivity_index(expected).mean())
    # gradient × activation: d logit_y / d h[b, t, c] = W[y, c] / T.
    attr = (h * model.head.weight[y].detach().unsqueeze(1) / T).abs()
    reduced = attr.mean(dim=1) if position is None else attr[:, position]
    got = attribution_scores("gradient_x_activation", model, "mix", x, y)
    torch.testing.assert_close(got, reduced.mean(dim=0))
    # Ablating channel c to zero (at every token, or at the view's position only).
    w = model.head.weight.detach()
    ce0 = nn.functional.cross_entropy(h.mean(dim=1) @ w.T, y)
    by_hand = []
    for c in range(C):
        hc = h.clone()
        hc[:, slice(None) if position is None else position, c] = 0
        by_hand.append(nn.functional.cross_entropy(hc.mean(dim=1) @ w.T, y) - ce0)
    masks = single_unit_masks(C)
    for strategy in ("auto", "hooks"):
        eff = ablation_effects(model, "mix", x, y, masks, metric="loss_increase", strategy=strategy)
        torch.testing.assert_close(eff, torch.stack(by_hand), atol=1e-6, rtol=0)
    assert plan_strategy(model, "mix", x)[0] == "hooks"  # the token mean is no module
    sd = unit_spread(model, "mix", x)
    ref = h.reshape(-1, C).std(dim=0) if position is None else h[:, position].std(dim=0)
    torch.testing.assert_close(sd, ref)


def test_weight_module_follows_the_view() -> None:
    assert isinstance(weight_module(Tokens(UnitView(-1)), "mix"), nn.Linear)
    conv = nn.Sequential(nn.Conv2d(1, 2, 3))
    conv.unit_views = {"0": UnitView(-1)}  # the width axis is not the conv's output channels
    with pytest.raises(FalsifyError, match="output axis of its Conv2d"):
        weight_module(conv, "0")


def test_logits_and_flatten_are_not_unit_layers() -> None:
    model = build_model(MLPSpec(kind="mlp", hidden=(8,)), (4,), 3)
    assert unit_view(model, "hidden1.linear") == CHANNELS  # inside a unit layer
    for layer in ("head", "flatten"):
        with pytest.raises(LocatedError, match="must be a unit layer"):
            unit_view(model, layer)
        with pytest.raises(LocatedError):
            ablation_effects(model, layer, torch.randn(5, 4), torch.zeros(5).long(), torch.eye(3))


@pytest.mark.parametrize("layer", ["head", "flatten"])
def test_a_file_naming_a_non_unit_layer_gets_the_one_line_error(write, tiny_yaml, layer) -> None:
    hf = load(write(tiny_yaml.replace("layers: [hidden1]", f"layers: [{layer}]")))
    with pytest.raises(FalsifyError) as exc:
        plan(hf, ModelCache(hf.path.parent / "c"), torch.device("cpu"))
    msg = str(exc.value)
    assert "\n" not in msg and "'test.layers[0]'" in msg and "h.yaml (line 10)" in msg
    assert "must be a unit layer" in msg and repr(layer) in msg


TOKEN_MODEL = """\
  model:
    factory: tests.helpers.usermodels:make_tokens
    kwargs: {width: 6}
    units: {mix: {axis: -1}}
"""


def test_a_file_declares_the_view_of_a_user_models_layer(write, tiny_yaml) -> None:
    text = tiny_yaml.replace("  model: {kind: mlp, hidden: [16]}\n", TOKEN_MODEL)
    hf = load(write(text.replace("layers: [hidden1]", "layers: [mix]")))
    spec = hf.hypothesis.population.model
    assert spec.model_dump(mode="json")["units"] == {"mix": {"axis": -1}}
    model = build_model(spec, (64,), 10).eval()
    assert unit_view(model, "mix") == UnitView(-1)
    plan(hf, ModelCache(hf.path.parent / "c"), torch.device("cpu"))  # mix is a unit layer
    x = load_dataset(DigitsData(kind="digits")).x_test[:50]
    y = torch.zeros(50, dtype=torch.long)
    acts = unit_activations(model, "mix", x)
    torch.testing.assert_close(acts, model.mix(x.view(50, 8, 8)).mean(dim=1))
    assert acts.shape == (50, 6)  # 6 channels, not 8 positions
    assert ablation_effects(model, "mix", x, y, single_unit_masks(6)).shape == (6,)
    # The layer the file names must exist; an undeclared file keeps its dump unchanged.
    bad = load(write(text.replace("units: {mix:", "units: {mixx:")))
    with pytest.raises(FalsifyError, match=r"'population.model.units.mixx'.*line 8"):
        plan(bad, ModelCache(hf.path.parent / "c"), torch.device("cpu"))
    assert "units" not in load(write(tiny_yaml)).hypothesis.population.model.model_dump()


@pytest.mark.parametrize(
    ("units", "layer", "needle"),
    [
        # the token layer read on axis 1 would make its 8 positions the units
        ("", "mix", "its output is [2, 8, 6], [batch, channels, length] or [batch, tokens"),
        ("", "out", "not the model's output (its logits)"),
        ("    units: {mix: {axis: -1}}\n", "mix", None),
    ],
)
def test_an_undeclared_model_is_refused_what_it_would_misread(
    write, tiny_yaml, units: str, layer: str, needle: str | None
) -> None:
    model = TOKEN_MODEL.replace("    units: {mix: {axis: -1}}\n", units)
    text = tiny_yaml.replace("  model: {kind: mlp, hidden: [16]}\n", model)
    hf = load(write(text.replace("layers: [hidden1]", f"layers: [{layer}]")))
    cache = ModelCache(hf.path.parent / "c")
    if needle is None:
        plan(hf, cache, torch.device("cpu"))
        return
    with pytest.raises(FalsifyError) as exc:
        plan(hf, cache, torch.device("cpu"))
    msg = str(exc.value)
    assert "\n" not in msg and "'test.layers[0]'" in msg and "(line 1" in msg
    assert needle in msg


def test_resample_sources_are_another_input_each() -> None:
    src = resample_sources(50, seed=3)
    assert sorted(src.tolist()) == list(range(50))
    assert (src != torch.arange(50)).all()
    assert torch.equal(src, resample_sources(50, seed=3))
    assert not torch.equal(src, resample_sources(50, seed=4))


def _resample_loop(
    model: nn.Module, layer: str, x: torch.Tensor, y: torch.Tensor, masks: torch.Tensor, seed: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """Plain forward hooks: [groups] loss increases and [groups, 2] per-class accuracy drops."""
    module = dict(model.named_modules())[layer]
    seen: list[torch.Tensor] = []
    handle = module.register_forward_hook(lambda _m, _i, o: seen.append(o))
    logits0 = model(x)
    handle.remove()
    donor = seen[0][resample_sources(len(x), seed)]  # [N, units, *space]
    loss, drop = [], []
    for mask in masks:

        def swap(_m: nn.Module, _i: Any, o: torch.Tensor, mask: torch.Tensor = mask) -> Any:
            o = o.clone()
            o[:, mask] = donor[:, mask]
            return o

        handle = module.register_forward_hook(swap)
        logits = model(x)
        handle.remove()
        ce = nn.functional.cross_entropy
        loss.append(ce(logits, y) - ce(logits0, y))
        ok0, ok = logits0.argmax(1) == y, logits.argmax(1) == y
        drop.append(torch.stack([(ok0 & (y == k)).sum() - (ok & (y == k)).sum() for k in (0, 1)]))
    counts = torch.bincount(y, minlength=2)
    return torch.stack(loss), torch.stack(drop) / counts


@pytest.mark.parametrize("kind", ["mlp", "cnn"])
def test_resample_fill_equals_a_plain_hook_loop(kind) -> None:
    torch.manual_seed(0)
    if kind == "mlp":
        model = build_model(MLPSpec(kind="mlp", hidden=(8, 6)), (5,), 2).eval()
        x, layer = torch.randn(60, 5), "hidden2"
    else:
        model = build_model(CNNSpec(kind="cnn", channels=(3, 4)), (1, 6, 6), 2).eval()
        x, layer = torch.randn(60, 1, 6, 6), "conv2"
    y = (x.flatten(1)[:, 0] > 0).long()
    units = 6 if kind == "mlp" else 4
    masks = torch.cat([single_unit_masks(units), torch.ones(1, units, dtype=torch.bool)])
    masks[-1, 0] = False  # one group of all units but the first
    loss, drop = _resample_loop(model, layer, x, y, masks, seed=5)
    assert loss.abs().max() > 0
    kw = {"value": "resample", "seed": 5, "metric": "loss_increase"}
    strategies = ["auto", "split", "hooks"] + (["rank_one"] if kind == "mlp" else [])
    for strategy in strategies:
        got = ablation_effects(model, layer, x, y, masks, strategy=strategy, batch_size=17, **kw)
        torch.testing.assert_close(got, loss.float(), atol=1e-5, rtol=0)
    got = ablation_effects(model, layer, x, y, masks, batched=False, batch_size=17, **kw)
    torch.testing.assert_close(got, loss.float(), atol=1e-5, rtol=0)
    per_class = class_ablation_effects(model, layer, x, y, masks, 2, value="resample", seed=5)
    torch.testing.assert_close(per_class, drop.float(), atol=1e-6, rtol=0)


def test_resample_ablation_curves_equal_the_hook_loop() -> None:
    torch.manual_seed(1)
    model = build_model(MLPSpec(kind="mlp", hidden=(5,)), (4,), 2).eval()
    x = torch.randn(50, 4)
    y = (x[:, 0] > 0).long()
    acc, base = ablation_curves(
        model, "hidden1", x, y, 2, torch.Generator().manual_seed(7), "resample"
    )
    g = torch.Generator().manual_seed(7)
    perms = random_orders(5, 2, g)
    seed = int(torch.randint(2**31, (1,), generator=g))
    for o in range(2):
        for k in range(6):
            mask = torch.zeros(1, 5, dtype=torch.bool)
            mask[0, perms[o, :k]] = True
            _, drop = _resample_loop(model, "hidden1", x, y, mask, seed)
            share = torch.bincount(y, minlength=2) / len(y)
            assert acc[o, k].item() == pytest.approx(base - float(drop[0] @ share), abs=1e-9)


def test_resample_hooks_are_removed_after_a_forced_error() -> None:
    model = Tokens(UnitView(-1)).eval()
    x, _ = _data()
    fill = fill_values(model, "mix", x, "resample", seed=1)
    assert fill.shape == (len(x), T, C)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    with (
        pytest.raises(RuntimeError, match="forced"),
        ablated(model, "mix", torch.ones(C) > 0, fill),
    ):
        model(x)
        raise RuntimeError("forced")
    assert _hook_count(model) == 0
    assert all(torch.equal(v, before[k]) for k, v in model.state_dict().items())
