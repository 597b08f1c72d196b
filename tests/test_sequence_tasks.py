"""The generated sequence tasks: inputs, scored labels and splits (docs/sequence-models.md)."""

from __future__ import annotations

import pytest
import torch
from pydantic import TypeAdapter, ValidationError

from falsify.data import load_dataset
from falsify.data.base import IGNORE, answer_labels, per_example_scores
from falsify.data.induction import InductionTask
from falsify.data.modular_addition import ModularAddition
from falsify.data.previous_token import PreviousTokenTask
from falsify.hypothesis.kinds import DATASETS, load_kinds
from falsify.hypothesis.types import Seed


def test_modular_addition_covers_every_pair_once_and_scores_the_last_position() -> None:
    data = load_dataset(ModularAddition(kind="modular_addition", p=7, train_fraction=0.4))
    x = torch.cat([data.x_train, data.x_test])
    y = torch.cat([data.y_train, data.y_test])
    assert data.x_train.dtype == torch.long and data.n_classes == 7 and data.input_shape == (3,)
    assert len(data.x_train) == round(0.4 * 49) and len(x) == 49
    assert len({tuple(r[:2].tolist()) for r in x}) == 49
    assert (x[:, 2] == 7).all()
    assert (y[:, :2] == IGNORE).all()
    assert torch.equal(y[:, 2], (x[:, 0] + x[:, 1]) % 7)
    assert torch.equal(answer_labels(data.y_test), data.y_test[:, 2])
    other = load_dataset(ModularAddition(kind="modular_addition", p=7, split_seed=1))
    assert not torch.equal(
        other.x_train[:10], load_dataset(ModularAddition(kind="modular_addition", p=7)).x_train[:10]
    )


def test_induction_repeats_the_first_half_and_scores_its_predictable_positions() -> None:
    data = load_dataset(InductionTask(kind="induction", vocab=10, half=4, n_train=30, n_test=5))
    x, y = data.x_train, data.y_train
    assert x.shape == (30, 9) and len(data.x_test) == 5
    assert (x[:, 0] == 10).all()
    assert torch.equal(x[:, 1:5], x[:, 5:])
    assert all(len(set(r[1:5].tolist())) == 4 for r in x)
    scored = (y != IGNORE).nonzero()[:, 1].unique().tolist()
    assert scored == [5, 6, 7]
    assert torch.equal(y[:, 5:8], x[:, 6:9])
    with pytest.raises(ValueError, match="exactly one scored position"):
        answer_labels(y)
    with pytest.raises(ValidationError, match="half at most vocab"):
        InductionTask(kind="induction", vocab=3, half=4)


def test_previous_token_answers_with_the_token_before() -> None:
    data = load_dataset(PreviousTokenTask(kind="previous_token", vocab=8, length=6, n_train=20))
    x, y = data.x_train, data.y_train
    assert (y[:, :2] == IGNORE).all()
    assert torch.equal(y[:, 2:], x[:, 1:-1])


def test_per_example_scores_average_the_scored_positions() -> None:
    # Two sequences of 3 positions over 2 classes; position 0 unscored.
    logits = torch.tensor(
        [[[0.0, 0.0], [2.0, 0.0], [0.0, 1.0]], [[5.0, 0.0], [0.0, 3.0], [1.0, 0.0]]]
    )
    y = torch.tensor([[IGNORE, 0, 0], [IGNORE, 1, 1]])
    correct, ce = per_example_scores(logits, y)
    assert correct.tolist() == [0.5, 0.5]
    lse = torch.logsumexp
    want0 = (lse(torch.tensor([2.0, 0.0]), 0) - 2.0 + lse(torch.tensor([0.0, 1.0]), 0) - 0.0) / 2
    want1 = (lse(torch.tensor([0.0, 3.0]), 0) - 3.0 + lse(torch.tensor([1.0, 0.0]), 0) - 0.0) / 2
    assert ce.tolist() == pytest.approx([float(want0), float(want1)], rel=1e-6)


def test_induction_with_min_half_varies_the_copy_distance() -> None:
    spec = InductionTask(kind="induction", vocab=12, half=5, min_half=2, n_train=40, n_test=1)
    data = load_dataset(spec)
    x, y = data.x_train, data.y_train
    assert x.shape == (40, 11)
    lengths = set()
    for row, labels in zip(x, y, strict=True):
        scored = (labels != IGNORE).nonzero().flatten()
        length = len(scored) + 1  # positions L+1..2L-1
        lengths.add(length)
        assert scored.tolist() == list(range(length + 1, 2 * length))
        assert torch.equal(row[1 : length + 1], row[length + 1 : 2 * length + 1])
        assert torch.equal(labels[scored], row[scored + 1])
        assert len(set(row[1:].tolist()) - set(row[1 : length + 1].tolist())) == 2 * (5 - length)
    assert len(lengths) > 1 and lengths <= {2, 3, 4, 5}
    with pytest.raises(ValidationError, match="min_half at most half"):
        InductionTask(kind="induction", half=3, min_half=4)


def _seed_bounds(schema: dict) -> dict:
    return {k: schema.get(k) for k in ("type", "minimum", "exclusiveMaximum")}


def test_every_split_seed_is_the_seed_type() -> None:
    # The token tasks take the one Seed type of falsify/hypothesis/types.py, as digits does.
    load_kinds()
    seed = _seed_bounds(TypeAdapter(Seed).json_schema())
    with_split = [cls for cls in DATASETS.classes() if "split_seed" in cls.model_fields]
    assert {ModularAddition, InductionTask, PreviousTokenTask} <= set(with_split)
    for cls in with_split:
        field = cls.model_json_schema()["properties"]["split_seed"]
        assert _seed_bounds(field) == seed, cls.tag()


@pytest.mark.parametrize("cls", [ModularAddition, InductionTask, PreviousTokenTask])
def test_a_token_task_split_seed_beyond_a_seed_is_refused(cls) -> None:
    with pytest.raises(ValidationError, match="less than 4294967296"):
        cls(kind=cls.tag(), split_seed=2**32)
    # a valid one is dumped as the plain integer it was, so cache keys stay as they were
    task = cls(kind=cls.tag(), split_seed=2**32 - 1)
    assert task.model_dump(include={"split_seed"}) == {"split_seed": 2**32 - 1}
