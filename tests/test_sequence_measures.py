"""Sequence measures against values computed by hand (docs/sequence-models.md)."""

from __future__ import annotations

import math

import pytest
import torch
from pydantic import ValidationError

from falsify.data import load_dataset
from falsify.data.base import IGNORE
from falsify.data.modular_addition import ModularAddition
from falsify.hooks import capture
from falsify.hypothesis.schema import Population
from falsify.measures.heads import (
    InductionScore,
    PrefixMatchingScore,
    PreviousTokenScore,
    induction_score,
    prefix_matching_score,
    previous_token_score,
)
from falsify.measures.model_level import TrainedModel
from falsify.measures.selectivity import ClassSelectivity
from falsify.measures.sequence import (
    FourierPowerShare,
    LogitDifference,
    SequenceLoss,
    fourier_power_share,
)
from falsify.models import build_model
from falsify.models.training import train_replicate
from falsify.models.transformer import TransformerSpec


def _uniform_model(t: int, n_classes: int, d_mlp: int = 0):
    """Attention that ignores content (W_Q = W_K = 0): uniform over the causal prefix."""
    spec = TransformerSpec(kind="transformer", d_model=8, n_heads=2, d_head=4, d_mlp=d_mlp)
    torch.manual_seed(0)
    model = build_model(spec, (t,), n_classes).eval()
    with torch.no_grad():
        model.blocks[0].attn.W_Q.zero_()
        model.blocks[0].attn.W_K.zero_()
    return model


def test_head_scores_on_hand_set_patterns() -> None:
    # One example, 2 heads, 5 positions. Head 0 attends one back (position 0 to itself);
    # head 1 attends to the token after the earlier copy of the current token where there is one.
    tokens = torch.tensor([[9, 1, 2, 1, 2]])
    p = torch.zeros(1, 2, 5, 5)
    p[0, 0, 0, 0] = 1.0
    for t in range(1, 5):
        p[0, 0, t, t - 1] = 1.0
    p[0, 1, :3] = torch.eye(5)[:3]
    p[0, 1, 3, 2] = 1.0  # token 1 at 3: its earlier copy is at 1, the next token at 2
    p[0, 1, 4, 3] = 0.5  # token 2 at 4: earlier copy at 2, next at 3; half its attention there
    p[0, 1, 4, 4] = 0.5
    # Head 1 attends one back only at 3 (fully) and 4 (half): (1 + 0.5) / 4.
    assert previous_token_score(p).tolist() == pytest.approx([1.0, 1.5 / 4])
    # Head 0: position 3 attends 2 (the right key), position 4 attends 3 (right): 1.0.
    assert prefix_matching_score(p, tokens).tolist() == pytest.approx([1.0, 0.75])
    # [BOS, a, b, a, b]: half 2; queries 3, 4 should attend 2, 3.
    assert induction_score(p, 2).tolist() == pytest.approx([1.0, 0.75])


def test_head_measures_read_the_blocks_pattern() -> None:
    model = _uniform_model(7, 10)
    x = torch.tensor([[10, 3, 4, 5, 3, 4, 5]])
    # Uniform causal attention gives 1 / (t + 1) to each key of query t.
    prev = sum(1 / (t + 1) for t in range(1, 7)) / 6
    got = PreviousTokenScore(kind="previous_token_score").measure(
        model, "blocks.0.attn.hook_z", x, x, 10
    )
    assert got.tolist() == pytest.approx([prev, prev])
    # Queries 4, 5, 6 have one earlier copy each: 1/5, 1/6, 1/7.
    pm = (1 / 5 + 1 / 6 + 1 / 7) / 3
    got = PrefixMatchingScore(kind="prefix_matching_score").measure(
        model, "blocks.0.attn.hook_z", x, x, 10
    )
    assert got.tolist() == pytest.approx([pm, pm])
    # Drawn [BOS, r, r] with half 3: queries 4..6 attend one key each, 1 / (t + 1).
    score = InductionScore(kind="induction_score", n=5).measure(
        model, "blocks.0.attn.hook_z", x, x, 10
    )
    assert score.tolist() == pytest.approx([pm, pm])
    with pytest.raises(Exception, match="head layer"):
        PreviousTokenScore(kind="previous_token_score").measure(
            model, "blocks.0.hook_resid_post", x, x, 10
        )


def _trained(model, data) -> TrainedModel:
    pop = Population(
        data=ModularAddition(kind="modular_addition", p=5),
        model=TransformerSpec(kind="transformer"),
        seeds=2,
    )
    return TrainedModel(model=model, population=pop, data=data, seed=0)


def test_loss_and_logit_difference_by_hand() -> None:
    data = load_dataset(ModularAddition(kind="modular_addition", p=5))
    model = _uniform_model(3, 5)
    t = _trained(model, data)
    x, y = data.x_test, data.y_test
    with torch.no_grad():
        logits = model(x)[:, -1]  # [n, 5]: the answer position
    answer = y[:, -1]
    want_ld = (
        logits.gather(1, answer[:, None]) - logits.gather(1, ((answer + 2) % 5)[:, None])
    ).mean()
    got = LogitDifference(kind="logit_difference", wrong_offset=2).compute(t)
    assert got == pytest.approx(float(want_ld), rel=1e-5)
    want_loss = torch.nn.functional.cross_entropy(logits, answer)
    assert SequenceLoss(kind="loss").compute(t) == pytest.approx(float(want_loss), rel=1e-5)
    assert (y[:, :2] == IGNORE).all()


def test_fourier_power_share_of_a_planted_embedding() -> None:
    p = 11
    a = torch.arange(p, dtype=torch.float64)
    emb = torch.stack(
        [
            torch.cos(2 * math.pi * 3 * a / p),
            torch.sin(2 * math.pi * 3 * a / p),
            0.5 * torch.cos(2 * math.pi * 5 * a / p),
            torch.full((p,), 7.0),
        ],
        dim=1,
    )
    # Frequency 3 has power p²/2 + p²/2, frequency 5 has 0.25 · p²/2; the constant is left out.
    assert fourier_power_share(emb, 1).item() == pytest.approx(1 / (1 + 1 / 8))
    assert fourier_power_share(emb, 2).item() == pytest.approx(1.0)
    model = _uniform_model(3, p)
    with torch.no_grad():
        model.embed.weight.zero_()
        model.embed.weight[:p, :4] = emb.float()
        model.embed.weight[p] = 100.0  # the '=' row is not a token of the answer
    data = load_dataset(ModularAddition(kind="modular_addition", p=p))
    share = FourierPowerShare(kind="fourier_power_share", top_k=1).compute(_trained(model, data))
    assert share == pytest.approx(8 / 9, rel=1e-6)


def test_neuron_selectivity_over_answer_classes_at_the_answer_position() -> None:
    data = load_dataset(ModularAddition(kind="modular_addition", p=5, train_fraction=0.5))
    spec = TransformerSpec(
        kind="transformer",
        d_model=8,
        n_heads=2,
        d_head=4,
        d_mlp=6,
        units={"blocks.0.mlp.hook_post": {"axis": 2, "position": -1}},
    )
    torch.manual_seed(0)
    model = build_model(spec, (3,), 5).eval()
    x, y = data.x_test, data.y_test
    with capture(model, "blocks.0.mlp.hook_post") as out:
        model(x)
    act = out[0][:, -1]  # [n, 6] at the '=' position
    answer = y[:, -1]
    means = torch.stack([act[answer == c].mean(0) for c in range(5)])
    top = means.max(0).values
    rest = (means.sum(0) - top) / 4
    want = (top - rest) / (top + rest + 1e-7)
    got = ClassSelectivity(kind="class_selectivity").measure(
        model, "blocks.0.mlp.hook_post", x, y, 5
    )
    assert torch.allclose(got, want, atol=1e-5)


def test_a_model_trained_to_copy_the_previous_token_attends_one_back() -> None:
    # The previous-token task's known structure: one layer solves it by attending to t - 1.
    pop = Population.model_validate(
        {
            "data": {"kind": "previous_token", "vocab": 12, "length": 8, "n_train": 500},
            "model": {
                "kind": "transformer",
                "n_layers": 1,
                "d_model": 16,
                "n_heads": 2,
                "d_head": 8,
            },
            "training": {"optimizer": "adamw", "lr": 0.01, "steps": 150, "batch_size": 100},
            "seeds": 2,
        }
    )
    data = load_dataset(pop.data)
    trained = train_replicate(pop, data, 0, torch.device("cpu"))
    assert trained.test_accuracy > 0.95
    score = PreviousTokenScore(kind="previous_token_score")
    got = score.measure(trained.model, "blocks.0.attn.hook_z", data.x_test, data.y_test, 12)
    assert float(got.max()) > 0.8
    # An untrained model of the same shape does not.
    torch.manual_seed(0)
    fresh = build_model(pop.model, data.input_shape, 12).eval()
    base = score.measure(fresh, "blocks.0.attn.hook_z", data.x_test, data.y_test, 12)
    assert float(base.max()) < 0.5


@pytest.mark.parametrize("seed", [-1, 2**32])
def test_the_induction_score_seed_is_a_seed(seed: int) -> None:
    # The Seed type of falsify/hypothesis/types.py, as every other seed field (file-format.md).
    with pytest.raises(ValidationError, match=r"greater than or equal to 0|less than 4294967296"):
        InductionScore(kind="induction_score", seed=seed)
