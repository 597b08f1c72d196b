"""The planted induction circuit is found by head scores, ablation and patching, exactly."""

from __future__ import annotations

import torch

from falsify.data import load_dataset
from falsify.data.base import per_example_scores
from falsify.data.induction import InductionTask
from falsify.interventions.ablation import ablation_effects, single_unit_masks
from falsify.interventions.patching import corrupt, patching_effects
from falsify.measures.heads import InductionScore, PreviousTokenScore
from falsify.models.planted_circuit import INDUCTION_HEAD, PREV_HEAD, planted_induction_model

TASK = InductionTask(kind="induction", vocab=16, half=6, min_half=3, n_train=10, n_test=100)
HEADS = 3


@torch.no_grad()
def test_the_planted_model_solves_induction_and_its_heads_score_as_wired() -> None:
    data = load_dataset(TASK)
    model = planted_induction_model(16, data.x_test.shape[1], HEADS)
    correct, _ = per_example_scores(model(data.x_test), data.y_test)
    assert correct.mean() == 1.0
    x = data.x_test
    prev = PreviousTokenScore(kind="previous_token_score").measure(
        model, "blocks.0.attn.hook_z", x, None, 16
    )
    ind = InductionScore(kind="induction_score").measure(model, "blocks.1.attn.hook_z", x, None, 16)
    assert int(prev.argmax()) == PREV_HEAD and prev[PREV_HEAD] > 0.99
    assert int(ind.argmax()) == INDUCTION_HEAD and ind[INDUCTION_HEAD] > 0.99
    assert prev.sort().values[-2] < 0.9 and ind.sort().values[-2] < 0.5


@torch.no_grad()
def test_ablation_and_patching_recover_exactly_the_planted_heads() -> None:
    data = load_dataset(TASK)
    x, y = data.x_test, data.y_test
    model = planted_induction_model(16, x.shape[1], HEADS)
    masks = single_unit_masks(HEADS)
    x_bad = corrupt(x, y, "prefix", seed=0)
    for layer, planted in (
        ("blocks.0.attn.hook_z", PREV_HEAD),
        ("blocks.1.attn.hook_z", INDUCTION_HEAD),
    ):
        for value in ("zero", "mean", "resample"):
            effects = ablation_effects(
                model, layer, x, y, masks, value=value, metric="accuracy_drop"
            )
            others = torch.cat([effects[:planted], effects[planted + 1 :]])
            assert effects[planted] > 0.5, (layer, value, effects)
            assert others.abs().max() < 1e-6, (layer, value, effects)
        patched = patching_effects(model, layer, x, y, x_bad, masks, metric="loss_increase")
        others = torch.cat([patched[:planted], patched[planted + 1 :]])
        assert patched[planted] > 1.0 and others.abs().max() < 1e-5, (layer, patched)
