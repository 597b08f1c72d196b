"""The transformer architecture: hook points, unit views, causality, and training from the seed."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from falsify.data import load_dataset
from falsify.data.induction import InductionTask
from falsify.hooks import capture
from falsify.hypothesis.loader import load
from falsify.hypothesis.schema import Population, TrainingSpec
from falsify.interventions.ablation import ablated, ablation_effects, single_unit_masks
from falsify.models import build_model
from falsify.models.training import _warmup, train_replicate
from falsify.models.transformer import TransformerSpec
from falsify.runner.cache import replicate_key
from falsify.runner.replicates import recipe_of
from falsify.units import unit_view

CPU = torch.device("cpu")
TASK = InductionTask(kind="induction", vocab=12, half=5, n_train=200, n_test=60)


def _model(**kw):
    spec = TransformerSpec(kind="transformer", d_model=16, n_heads=2, d_head=8, **kw)
    torch.manual_seed(0)
    return build_model(spec, (11,), 12).eval()


def test_hook_points_have_their_documented_shapes() -> None:
    model = _model(n_layers=2, d_mlp=20, layer_norm=True)
    x = torch.randint(0, 13, (3, 11))
    shapes = {
        "blocks.1.hook_resid_pre": [3, 11, 16],
        "blocks.0.hook_resid_post": [3, 11, 16],
        "blocks.0.attn.hook_pattern": [3, 2, 11, 11],
        "blocks.1.attn.hook_z": [3, 11, 2, 8],
        "blocks.1.mlp.hook_post": [3, 11, 20],
    }
    for layer, shape in shapes.items():
        with capture(model, layer) as out:
            logits = model(x)
        assert list(out[0].shape) == shape, layer
    assert list(logits.shape) == [3, 11, 12]
    assert unit_view(model, "blocks.1.attn.hook_z").n_units(torch.zeros(3, 11, 2, 8)) == 2
    assert set(model.unit_views) == {
        f"blocks.{i}.{h}" for i in (0, 1) for h in ("attn.hook_z", "mlp.hook_post")
    }
    # Causal: attention puts no weight on later keys, and rows sum to one.
    with capture(model, "blocks.0.attn.hook_pattern") as pat:
        model(x)
    assert float(pat[0].triu(diagonal=1).abs().max()) == 0.0
    assert torch.allclose(pat[0].sum(-1), torch.ones(3, 2, 11))


def test_attention_only_model_has_no_mlp_and_refuses_float_inputs() -> None:
    model = _model()
    assert model.blocks[0].mlp is None and set(model.unit_views) == {"blocks.0.attn.hook_z"}
    with pytest.raises(Exception, match="token ids"):
        model(torch.zeros(2, 11))


def test_zeroing_a_heads_output_removes_exactly_its_term() -> None:
    model = _model()
    x = torch.randint(0, 13, (4, 11))
    with capture(model, "blocks.0.attn.hook_z") as z:
        model(x)
    attn = model.blocks[0].attn
    # The logits without head 1: subtract its W_O term from the residual stream by hand.
    resid = model.embed(x) + model.pos_embed(torch.arange(11))
    kept = torch.einsum("bqe,ed->bqd", z[0][:, :, 0], attn.W_O[0]) + attn.b_O
    want = model.unembed(resid + kept)

    mask = torch.tensor([False, True])
    with ablated(model, "blocks.0.attn.hook_z", mask, torch.zeros(11, 2, 8)):
        got = model(x)
    assert torch.allclose(got, want, atol=1e-5)


@pytest.mark.parametrize("value", ["zero", "mean", "resample"])
def test_head_and_neuron_ablation_sweeps_equal_the_plain_hook_loop(value: str) -> None:
    model = _model(n_layers=2, d_mlp=6)
    data = load_dataset(TASK)
    x, y = data.x_test, data.y_test
    for layer, units in (("blocks.1.attn.hook_z", 2), ("blocks.0.mlp.hook_post", 6)):
        masks = single_unit_masks(units)
        for metric in ("accuracy_drop", "loss_increase"):
            fast = ablation_effects(model, layer, x, y, masks, value=value, metric=metric)
            slow = ablation_effects(
                model, layer, x, y, masks, value=value, metric=metric, batched=False
            )
            assert torch.allclose(fast, slow, atol=1e-6), (layer, metric)
    loss = ablation_effects(
        model,
        "blocks.1.attn.hook_z",
        x,
        y,
        masks[:0].new_ones(1, 2),
        value=value,
        metric="loss_increase",
    )
    assert loss.shape == (1,)


def _population(**training) -> Population:
    return Population(
        data=TASK,
        model=TransformerSpec(kind="transformer", n_layers=2, d_model=16, n_heads=2, d_head=8),
        training=TrainingSpec(**training),
        seeds=2,
    )


def test_training_is_deterministic_from_the_seed_and_runs_the_steps_asked() -> None:
    pop = _population(
        optimizer="adamw", lr=3e-3, steps=7, warmup_steps=3, batch_size=64, weight_decay=0.1
    )
    data = load_dataset(pop.data)
    a = train_replicate(pop, data, 0, CPU)
    b = train_replicate(pop, data, 0, CPU)
    c = train_replicate(pop, data, 1, CPU)
    for (k, va), vb in zip(
        a.model.state_dict().items(), b.model.state_dict().values(), strict=True
    ):
        assert torch.equal(va, vb), k
    assert not torch.equal(a.model.embed.weight, c.model.embed.weight)
    # 200 examples in batches of 64 are 4 steps an epoch: 7 steps are one epoch and 3 batches.
    longer = train_replicate(
        pop.model_copy(update={"training": pop.training.model_copy(update={"steps": 8})}),
        data,
        0,
        CPU,
    )
    assert not torch.equal(a.model.embed.weight, longer.model.embed.weight)
    full = _population(optimizer="adamw", steps=2, batch_size=10_000)
    assert 0.0 <= train_replicate(full, data, 0, CPU).test_accuracy <= 1.0


def test_warmup_rises_linearly_to_the_rate() -> None:
    opt = torch.optim.AdamW([torch.nn.Parameter(torch.zeros(1))], lr=1.0)
    schedule = _warmup(opt, 4)
    rates = []
    for _ in range(6):
        rates.append(opt.param_groups[0]["lr"])
        opt.step()
        schedule.step()
    assert rates == pytest.approx([0.25, 0.5, 0.75, 1.0, 1.0, 1.0])
    assert _warmup(opt, 0) is None


def test_a_bundled_recipe_keeps_its_cache_key() -> None:
    hyp = load(
        Path(__file__).parents[1] / "hypotheses/selectivity_predicts_importance.yaml"
    ).hypothesis
    recipe = recipe_of(hyp.population)
    assert "steps" not in recipe["training"] and "warmup_steps" not in recipe["training"]
    # The key on main before steps, warm-up and AdamW existed (torch 2.13.0, the pinned wheel).
    want = "d50e06ff1c6f208e7672bfabebf813f2e0afed7a28b1fdf490d1d4cd9db8d1d7"
    assert replicate_key(recipe, 0, CPU) == want
    assert "steps" in recipe_of(_population(steps=5))["training"]
