"""A selectivity-regularized population trains as a stacked ensemble, each replicate's term on
its own layer outputs, bit for bit as sequential training (docs/performance.md, "Ensemble
training")."""

from __future__ import annotations

import json

import pytest
import torch

from falsify.data import load_dataset
from falsify.data.digits import DigitsData
from falsify.hypothesis.kinds import ArchitectureKind, DataKind
from falsify.hypothesis.schema import Population, TrainingSpec
from falsify.models import regularizers
from falsify.models.cnn import CNNSpec
from falsify.models.ensemble import NotBatchable, supports_ensemble, train_ensemble
from falsify.models.mlp import MLPSpec
from falsify.models.regularizers import (
    SelectivityTerm,
    batch_selectivity,
    stacked_batch_selectivity,
)
from falsify.models.resnet import ResNet20Spec
from falsify.models.training import train_replicate
from falsify.runner.cache import ModelCache
from falsify.runner.replicates import obtain_replicates
from tests.ensembles import CPU, assert_equals_sequential, same_weights

DIGITS = DigitsData(kind="digits")
MLP = MLPSpec(kind="mlp", hidden=(16, 8))


def population(model: ArchitectureKind, data: DataKind = DIGITS, **training: object) -> Population:
    return Population(
        data=data,
        model=model,
        training=TrainingSpec(**({"epochs": 2, "batch_size": 100, "lr": 0.01} | training)),
        seeds=3,
    )


RECIPES = {
    # Every unit layer, lowering selectivity (the bundled files' grid point α = −1).
    "mlp, all layers": (MLP, {"selectivity": {"alpha": -1.0}}),
    # One layer, raising it, with batch norm, dropout and label noise.
    "mlp, batch norm and dropout": (
        MLPSpec(kind="mlp", hidden=(16, 8), batch_norm=True, dropout=0.2),
        {"selectivity": {"alpha": 2.0, "layers": ["hidden1"]}, "label_noise": 0.2},
    ),
    # On in the second of three epochs only.
    "mlp, window": (MLP, {"epochs": 3, "selectivity": {"alpha": -1.0, "window": [1, 2]}}),
    # Channels averaged over space, in the stacked channels layout.
    "cnn": (CNNSpec(kind="cnn", batch_norm=True), {"selectivity": {"alpha": -1.0}}),
    "resnet20": (
        ResNet20Spec(kind="resnet20", width=4),
        {"steps": 4, "selectivity": {"alpha": -1.0, "layers": ["layer1.0", "layer3.2"]}},
    ),
}


@pytest.mark.parametrize("name", RECIPES)
def test_each_regularized_model_equals_sequential_training_bit_for_bit(name) -> None:
    model, training = RECIPES[name]
    pop = population(model, **training)
    assert supports_ensemble(pop)
    data = load_dataset(DIGITS)
    for ens, seq in assert_equals_sequential(pop, data):
        assert ens.metrics == seq.metrics  # the selectivity it achieved


def test_the_term_changes_what_the_ensemble_trains() -> None:
    # Without the term the stacked trainer would give the plain models: it must not.
    data = load_dataset(DIGITS)
    plain = train_ensemble(population(MLP), data, [0], CPU)[0]
    regularized = train_ensemble(population(MLP, selectivity={"alpha": -1.0}), data, [0], CPU)[0]
    assert not same_weights(plain.model, regularized.model)
    assert regularized.metrics["mean_selectivity"] < plain.metrics.get("mean_selectivity", 1.0)


def _trainers(root, reps) -> set[str]:
    return {
        json.loads((root / "models" / r.key[:2] / f"{r.key}.json").read_text())["trainer"]
        for r in reps
    }


def test_runner_trains_a_regularized_population_as_an_ensemble(tmp_path) -> None:
    model, training = RECIPES["mlp, all layers"]
    pop = population(model, **training)
    data = load_dataset(DIGITS)
    reps = obtain_replicates(pop, data, ModelCache(tmp_path), CPU, progress=False)
    assert _trainers(tmp_path, reps) == {"ensemble"}
    for seed, rep in zip(pop.seeds, reps, strict=True):
        assert same_weights(rep.model, train_replicate(pop, data, seed, CPU).model)


def test_a_layer_the_stacked_network_does_not_keep_falls_back_to_sequential(tmp_path) -> None:
    # The stacked MLP keeps its blocks' outputs, not the linear module inside a block.
    pop = population(MLP, selectivity={"alpha": -1.0, "layers": ["hidden1.linear"]})
    data = load_dataset(DIGITS)
    with pytest.raises(NotBatchable, match="does not keep"):
        train_ensemble(pop, data, [0, 1], CPU)
    reps = obtain_replicates(pop, data, ModelCache(tmp_path), CPU, progress=False)
    assert _trainers(tmp_path, reps) == {"sequential"}
    assert same_weights(reps[1].model, train_replicate(pop, data, 1, CPU).model)


def test_stacked_selectivity_is_each_replicates_batch_selectivity() -> None:
    gen = torch.Generator().manual_seed(0)
    act = torch.rand(3, 40, 6, generator=gen)
    labels = torch.randint(0, 5, (3, 40), generator=gen)
    labels[1][labels[1] == 2] = 0  # class 2 absent from replicate 1's batch
    labels[2] = 4  # a single class: no selectivity
    got = stacked_batch_selectivity(act, labels, 5)
    want = torch.stack([batch_selectivity(a, y, 5) for a, y in zip(act, labels, strict=True)])
    torch.testing.assert_close(got, want, rtol=0, atol=1e-6)
    assert got[2] == 0


def _count_stacked(monkeypatch) -> list[int]:
    calls = [0]
    original = SelectivityTerm.stacked

    def counted(self, *args):
        calls[0] += 1
        return original(self, *args)

    monkeypatch.setattr(SelectivityTerm, "stacked", counted)
    return calls


@pytest.mark.parametrize(("name", "steps"), [("mlp, all layers", 30), ("cnn", 30), ("resnet20", 4)])
def test_the_terms_run_for_all_replicates_at_once(monkeypatch, name, steps) -> None:
    # Dense outputs as they are, conv outputs' channels averaged over space in one read.
    calls = _count_stacked(monkeypatch)
    model, training = RECIPES[name]
    pop = population(model, **training)
    data = load_dataset(DIGITS)
    together = train_ensemble(pop, data, list(pop.seeds), CPU)
    assert calls[0] > steps  # the probe, then every step
    assert same_weights(together[2].model, train_replicate(pop, data, 2, CPU).model)


def test_a_stacked_term_the_probe_rejects_runs_replicate_by_replicate(monkeypatch) -> None:
    # A stacked term whose gradient is not the per-replicate one's must not be used.
    wrong = regularizers.stacked_batch_selectivity
    monkeypatch.setattr(
        regularizers, "stacked_batch_selectivity", lambda *a, **k: 1.5 * wrong(*a, **k)
    )
    model, training = RECIPES["mlp, all layers"]
    pop = population(model, **training)
    data = load_dataset(DIGITS)
    calls = _count_stacked(monkeypatch)
    together = train_ensemble(pop, data, list(pop.seeds), CPU)
    assert calls[0] == 2  # the probes only: one per batch shape (100, and the last 37)
    for seed, ens in zip(pop.seeds, together, strict=True):
        assert same_weights(ens.model, train_replicate(pop, data, seed, CPU).model)
