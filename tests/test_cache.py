from __future__ import annotations

import torch

from falsify.data import load_dataset
from falsify.data.digits import DigitsData
from falsify.hypothesis.schema import Population, TrainingSpec
from falsify.models import build_model
from falsify.models.mlp import MLPSpec
from falsify.runner.cache import ModelCache, replicate_key
from falsify.runner.replicates import obtain_replicates, recipe_of

POP = Population(
    data=DigitsData(kind="digits"),
    model=MLPSpec(kind="mlp", hidden=(8,)),
    training=TrainingSpec(epochs=2),
    seeds=2,
)
CPU = torch.device("cpu")


def test_training_is_deterministic_and_cached(tmp_path) -> None:
    data = load_dataset(POP.data)
    cache = ModelCache(tmp_path)
    first = obtain_replicates(POP, data, cache, CPU, progress=False)
    assert [r.cache_hit for r in first] == [False, False]
    again = obtain_replicates(POP, data, ModelCache(tmp_path), CPU, progress=False)
    assert [r.cache_hit for r in again] == [True, True]
    for a, b in zip(first, again, strict=True):
        for (k, va), vb in zip(
            a.model.state_dict().items(), b.model.state_dict().values(), strict=True
        ):
            assert torch.equal(va, vb), k
    # A fresh, uncached training run gives bit-identical weights.
    fresh = obtain_replicates(POP, data, ModelCache(tmp_path / "other"), CPU, progress=False)
    assert torch.equal(fresh[0].model.head.weight, first[0].model.head.weight)
    # Different seeds give different models.
    assert not torch.equal(first[0].model.head.weight, first[1].model.head.weight)
    # No temporary files are left behind.
    assert not list(tmp_path.rglob(".*.tmp-*"))


def test_key_changes_with_everything_that_sets_the_weights() -> None:
    base = replicate_key(recipe_of(POP), 0, CPU)
    assert replicate_key(recipe_of(POP), 1, CPU) != base
    other = POP.model_copy(update={"training": TrainingSpec(epochs=3)})
    assert replicate_key(recipe_of(other), 0, CPU) != base
    assert replicate_key(recipe_of(POP), 0, torch.device("cuda")) != base
    # The seed list is not part of a replicate's recipe: adding seeds reuses the others.
    more = POP.model_copy(update={"seeds": (0, 1, 2)})
    assert replicate_key(recipe_of(more), 0, CPU) == base


def test_incomplete_entry_is_a_miss(tmp_path) -> None:
    data = load_dataset(POP.data)
    cache = ModelCache(tmp_path)
    [rep, _] = obtain_replicates(POP, data, cache, CPU, progress=False)
    weights = next(tmp_path.rglob("*.safetensors"))
    weights.write_bytes(b"truncated")  # as if a disk error had damaged it
    model = build_model(POP.model, data.input_shape, data.n_classes)
    assert cache.load(weights.stem, model) is None
    # The next run retrains and repairs the entry.
    again = obtain_replicates(POP, data, cache, CPU, progress=False)
    assert not again[0].cache_hit or not again[1].cache_hit
    assert torch.equal(again[0].model.head.weight, rep.model.head.weight)
