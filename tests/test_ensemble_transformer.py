"""The transformer trained as a stacked ensemble equals sequential training bit for bit
(docs/performance.md, "Ensemble training")."""

from __future__ import annotations

import json

import pytest

from falsify.data import load_dataset
from falsify.data.induction import InductionTask
from falsify.data.modular_addition import ModularAddition
from falsify.hypothesis.kinds import DataKind
from falsify.hypothesis.schema import Population, TrainingSpec
from falsify.models.ensemble import supports_ensemble, train_ensemble
from falsify.models.training import train_replicate
from falsify.models.transformer import TransformerSpec
from falsify.runner.cache import ModelCache
from falsify.runner.replicates import obtain_replicates
from tests.ensembles import CPU, assert_equals_sequential, same_weights

ADDITION = ModularAddition(kind="modular_addition", p=11, train_fraction=0.5)  # 60 examples
INDUCTION = InductionTask(kind="induction", vocab=10, half=5, min_half=3, n_train=120, n_test=40)
ADAMW = {"optimizer": "adamw", "lr": 0.01, "weight_decay": 0.1, "warmup_steps": 3}


def population(data: DataKind, model: TransformerSpec, **training: object) -> Population:
    return Population(data=data, model=model, training=TrainingSpec(**(ADAMW | training)), seeds=3)


def transformer(**kw: object) -> TransformerSpec:
    return TransformerSpec(kind="transformer", d_model=8, n_heads=2, d_head=4, **kw)


# Modular addition with an MLP, full batch (the bundled recipe's layout); induction with two
# attention-only layers in batches of 50 (a last partial batch of 20, and steps running into a
# third epoch); layer norm (looped per replicate) with an MLP.
RECIPES = {
    "modular addition": (ADDITION, transformer(d_mlp=16), {"steps": 6, "batch_size": 100}),
    "induction": (INDUCTION, transformer(n_layers=2), {"steps": 7, "batch_size": 50}),
    "layer norm": (
        INDUCTION,
        transformer(d_mlp=8, layer_norm=True),
        {"steps": 3, "batch_size": 50, "optimizer": "adam"},
    ),
}


@pytest.mark.parametrize("name", RECIPES)
def test_each_transformer_equals_sequential_training_bit_for_bit(name) -> None:
    data_spec, model, training = RECIPES[name]
    pop = population(data_spec, model, **training)
    assert supports_ensemble(pop)
    data = load_dataset(data_spec)
    assert_equals_sequential(pop, data)


def test_a_transformer_does_not_depend_on_the_other_members() -> None:
    data_spec, model, training = RECIPES["induction"]
    pop = population(data_spec, model, **training)
    data = load_dataset(data_spec)
    alone = train_ensemble(pop, data, [2], CPU)[0]
    among = train_ensemble(pop, data, [5, 2, 0], CPU)[1]
    assert same_weights(alone.model, among.model)


def test_runner_trains_a_transformer_population_as_an_ensemble(tmp_path) -> None:
    data_spec, model, training = RECIPES["modular addition"]
    pop = population(data_spec, model, **training)
    data = load_dataset(data_spec)
    reps = obtain_replicates(pop, data, ModelCache(tmp_path), CPU, progress=False)
    trainers = {
        json.loads((tmp_path / "models" / r.key[:2] / f"{r.key}.json").read_text())["trainer"]
        for r in reps
    }
    assert trainers == {"ensemble"}
    for seed, rep in zip(pop.seeds, reps, strict=True):
        assert same_weights(rep.model, train_replicate(pop, data, seed, CPU).model)
