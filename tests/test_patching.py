"""Activation patching and resample ablation of heads and neurons against a plain hook loop."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from falsify.data import load_dataset
from falsify.data.base import IGNORE
from falsify.data.induction import InductionTask
from falsify.interventions.ablation import ablation_effects, resample_sources, single_unit_masks
from falsify.interventions.patching import UnitPatchingEffect, corrupt, patching_effects
from falsify.models import build_model
from falsify.models.transformer import TransformerSpec

TASK = InductionTask(kind="induction", vocab=12, half=5, min_half=3, n_train=10, n_test=40)


def _model():
    spec = TransformerSpec(kind="transformer", n_layers=2, d_model=16, n_heads=3, d_head=4, d_mlp=5)
    torch.manual_seed(1)
    return build_model(spec, (11,), 12).eval()


def _plain_loss(model, layer, x, y, unit, source_x, axis):
    """The clean loss with ``unit`` of ``layer`` (units on ``axis``) taken from ``source_x``'s run,
    written with raw torch hooks: one forward for the source, one hooked clean forward."""
    module = dict(model.named_modules())[layer]
    seen = []
    h = module.register_forward_hook(lambda _m, _i, out: seen.append(out))
    model(source_x)
    h.remove()

    def patch(_m, _i, out):
        out = out.clone()
        index = [slice(None)] * out.dim()
        index[axis] = unit
        out[tuple(index)] = seen[0][tuple(index)]
        return out

    h = module.register_forward_hook(patch)
    logits = model(x)
    h.remove()
    # falsify's loss: the mean over scored positions of each example, then over examples.
    ce = F.cross_entropy(logits.transpose(1, 2), y, ignore_index=IGNORE, reduction="none")
    scored = (y != IGNORE).float()
    return ((ce * scored).sum(1) / scored.sum(1)).mean()


def _plain_intact(model, x, y):
    logits = model(x)
    ce = F.cross_entropy(logits.transpose(1, 2), y, ignore_index=IGNORE, reduction="none")
    scored = (y != IGNORE).float()
    return ((ce * scored).sum(1) / scored.sum(1)).mean()


@pytest.mark.parametrize(
    ("layer", "units"), [("blocks.1.attn.hook_z", 3), ("blocks.0.mlp.hook_post", 5)]
)
@torch.no_grad()
def test_patching_and_resample_ablation_equal_a_plain_hook_loop(layer: str, units: int) -> None:
    model = _model()
    data = load_dataset(TASK)
    x, y = data.x_test, data.y_test
    x_bad = corrupt(x, y, "prefix", seed=3)
    masks = single_unit_masks(units)
    base = _plain_intact(model, x, y)
    got = patching_effects(model, layer, x, y, x_bad, masks)
    want = torch.stack([_plain_loss(model, layer, x, y, u, x_bad, 2) - base for u in range(units)])
    assert torch.allclose(got, want.float(), atol=1e-6)
    assert want.abs().max() > 1e-3  # the patch changes the loss: the check can fail
    resampled = ablation_effects(
        model, layer, x, y, masks, value="resample", seed=4, metric="loss_increase"
    )
    source = x[resample_sources(len(x), 4)]
    want = torch.stack([_plain_loss(model, layer, x, y, u, source, 2) - base for u in range(units)])
    assert torch.allclose(resampled, want.float(), atol=1e-6)
    effect = UnitPatchingEffect(kind="unit_patching", corruption="prefix", seed=3)
    assert torch.allclose(effect.effects(model, layer, x, y), got)


def test_a_prefix_corruption_keeps_the_scored_part_and_changes_the_context() -> None:
    data = load_dataset(TASK)
    x, y = data.x_test, data.y_test
    bad = corrupt(x, y, "prefix", seed=0)
    first = (y != IGNORE).float().argmax(dim=1)
    for i in range(len(x)):
        assert torch.equal(bad[i, first[i] :], x[i, first[i] :])
        assert torch.equal(bad[i, : first[i]], x[resample_sources(len(x), 0)[i], : first[i]])
    assert not torch.equal(bad, x)
    assert torch.equal(corrupt(x, y, "resample", seed=0), x[resample_sources(len(x), 0)])
