"""The engine's ``resume`` strategy on falsify's transformer equals the plain hook loop.

Heads (``attn.hook_z``) and neurons (``mlp.hook_post``, mean and position views) of a small
random transformer, zero, mean and resample fills, both metrics, single units and groups, and
activation patching; a Hugging Face GPT-2 falls back to hooks (docs/sequence-models.md, "Speed
of head and neuron sweeps").
"""

from __future__ import annotations

import pytest
import torch

from falsify.data.base import IGNORE
from falsify.interventions import ablation_effects, single_unit_masks
from falsify.interventions.engine import ablation_sweep, plan_strategy
from falsify.interventions.patching import corrupt, patching_effects
from falsify.models.transformer import Transformer
from falsify.units import UnitView

N_CLASSES, T = 7, 9


def _model(layer_norm: bool) -> Transformer:
    torch.manual_seed(3)
    model = Transformer(N_CLASSES, T, 2, 16, 4, 4, 24, layer_norm).eval()
    # Larger weights than the initialization, so an ablation changes predictions.
    with torch.no_grad():
        for p in model.parameters():
            p.mul_(2.0)
    return model


def _data(n: int = 40) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(5)
    x = torch.randint(0, N_CLASSES + 1, (n, T), generator=g)
    y = torch.randint(0, N_CLASSES, (n, T), generator=g)
    y[:, : T // 2] = IGNORE  # scored on the second half, as induction is
    return x, y


LAYERS = ["blocks.0.attn.hook_z", "blocks.1.attn.hook_z", "blocks.0.mlp.hook_post"]


@pytest.mark.parametrize("layer_norm", [False, True])
@pytest.mark.parametrize("layer", LAYERS)
@pytest.mark.parametrize("value", ["zero", "mean", "resample"])
@pytest.mark.parametrize("metric", ["accuracy_drop", "loss_increase"])
def test_resume_equals_the_hook_loop(layer_norm, layer, value, metric) -> None:
    model = _model(layer_norm)
    x, y = _data()
    assert plan_strategy(model, layer, x)[0] == "resume"
    units = 4 if "hook_z" in layer else 24
    masks = torch.cat([single_unit_masks(units), torch.rand(3, units) < 0.5])  # + groups
    kw = {"value": value, "metric": metric, "batch_size": 13}
    loop = ablation_effects(model, layer, x, y, masks, batched=False, **kw)
    fast = ablation_effects(model, layer, x, y, masks, strategy="resume", **kw)
    hooks = ablation_effects(model, layer, x, y, masks, strategy="hooks", **kw)
    assert torch.allclose(fast, loop, atol=1e-6)
    assert torch.allclose(fast, hooks, atol=1e-6)
    assert fast.abs().max() > 0  # the ablations do something


def test_resume_with_a_position_view_and_small_chunks() -> None:
    model = _model(True)
    layer = "blocks.1.mlp.hook_post"
    model.unit_views[layer] = UnitView(axis=2, position=-1)
    x, y = _data()
    masks = single_unit_masks(24)
    kw = {"value": "mean", "metric": "loss_increase"}
    loop = ablation_effects(model, layer, x, y, masks, batched=False, **kw)
    # A budget of a few rows per chunk: many chunks, the same numbers.
    res = ablation_sweep(model, layer, x, y, masks, torch.zeros(T, 24), max_bytes=50_000)
    assert res.strategy == "resume" and res.chunk_rows < len(x)
    fast = ablation_effects(model, layer, x, y, masks, max_bytes=50_000, **kw)
    assert torch.allclose(fast, loop, atol=1e-6)


@pytest.mark.parametrize("layer", LAYERS)
def test_patching_equals_the_hook_loop(layer) -> None:
    model = _model(True)
    x, y = _data()
    x_bad = corrupt(x, y, "prefix", seed=1)
    units = 4 if "hook_z" in layer else 24
    masks = single_unit_masks(units)
    fast = patching_effects(model, layer, x, y, x_bad, masks)
    # The plain loop: one hooked forward per unit, with the corrupted run's activations.
    outs = {}
    handle = model.get_submodule(layer).register_forward_hook(lambda _m, _i, o: outs.update(o=o))
    with torch.no_grad():
        model(x_bad)
        handle.remove()
        base = _loss(model(x), y)
        loop = []
        view = model.unit_views[layer]
        for mask in masks:
            hook = model.get_submodule(layer).register_forward_hook(
                lambda _m, _i, o, m=mask: view.apply(o, m, outs["o"])
            )
            loop.append(_loss(model(x), y) - base)
            hook.remove()
    assert torch.allclose(fast, torch.stack(loop), atol=1e-6)
    assert fast.abs().max() > 0


def _loss(logits: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    ce = torch.nn.functional.cross_entropy(
        logits.transpose(1, 2), y, ignore_index=IGNORE, reduction="none"
    )
    scored = (y != IGNORE).to(ce.dtype)
    return ((ce * scored).sum(1) / scored.sum(1)).mean()


def test_other_models_fall_back_to_hooks() -> None:
    transformers = pytest.importorskip("transformers")
    cfg = transformers.GPT2Config(n_layer=1, n_embd=16, n_head=2, n_positions=T, vocab_size=8)
    model = transformers.GPT2LMHeadModel(cfg).eval()
    x, _ = _data(4)
    assert plan_strategy(model, "transformer.h.0.mlp.act", x)[0] == "hooks"
    with pytest.raises(ValueError, match="cannot resume"):
        plan_strategy(model, "transformer.h.0.mlp.act", x, "resume")
    with pytest.raises(ValueError, match="cannot resume"):
        plan_strategy(_model(False), "blocks.0.hook_resid_pre", x, "resume")
