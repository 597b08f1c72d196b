from __future__ import annotations

import json
import time

import pytest
import torch

from falsify.data import load_dataset
from falsify.data.digits import DigitsData
from falsify.hypothesis.conditions import expand
from falsify.hypothesis.kinds import ArchitectureKind
from falsify.hypothesis.schema import Population, TrainingSpec
from falsify.models import stacked
from falsify.models.cnn import CNNSpec
from falsify.models.ensemble import NotBatchable, supports_ensemble, train_ensemble
from falsify.models.mlp import MLPSpec
from falsify.models.resnet import ResNet20Spec
from falsify.models.training import train_replicate
from falsify.runner.cache import ModelCache
from falsify.runner.executors import LocalPool
from falsify.runner.replicates import _ensemble_is_faster, obtain_replicates
from tests.ensembles import CPU, assert_equals_sequential, same_weights

DATA = DigitsData(kind="digits")


def population(model: ArchitectureKind | None = None, **training: object) -> Population:
    return Population(
        data=DATA,
        model=model or MLPSpec(kind="mlp", hidden=(16, 8)),
        # 1437 training examples: batches of 100 leave a last batch of 37.
        training=TrainingSpec(**({"epochs": 2, "batch_size": 100} | training)),
        seeds=3,
    )


@pytest.mark.parametrize(
    "training",
    [
        {"optimizer": "adam", "lr": 0.01},
        {"optimizer": "sgd", "lr": 0.1, "momentum": 0.9, "weight_decay": 1e-3},
        {"optimizer": "adam", "lr": 0.01, "weight_decay": 1e-2},
    ],
)
def test_each_model_equals_sequential_training_bit_for_bit(training) -> None:
    pop = population(**training)
    data = load_dataset(DATA)
    assert_equals_sequential(pop, data)


def test_a_model_does_not_depend_on_the_other_members() -> None:
    pop = population(lr=0.01)
    data = load_dataset(DATA)
    alone = train_ensemble(pop, data, [2], CPU)[0]
    among = train_ensemble(pop, data, [5, 2, 0], CPU)[1]
    assert same_weights(alone.model, among.model)


def test_fast_mode_agrees_to_float_rounding() -> None:
    pop = population(lr=0.01)
    data = load_dataset(DATA)
    fast = train_ensemble(pop, data, list(pop.seeds), CPU, exact=False)
    for seed, ens in zip(pop.seeds, fast, strict=True):
        seq = train_replicate(pop, data, seed, CPU).model.state_dict()
        for k, v in ens.model.state_dict().items():
            assert torch.allclose(v, seq[k], atol=1e-4), k


# Batch norm (its own statistics and running averages per replicate, the batch-of-one skip),
# dropout (each replicate's masks from its own generator) and convolutions (grouped), each
# with a recipe feature that is uniform across replicates (schedule, optimizer, labels).
ARCHITECTURES = {
    "mlp batch norm + dropout": (
        MLPSpec(kind="mlp", hidden=(16, 8), batch_norm=True, dropout=0.2),
        # 1437 examples in batches of 718: a last batch of one, skipped under batch norm.
        {"lr": 0.01, "batch_size": 718, "epochs": 3},
    ),
    "mlp dropout, adamw + warm-up": (
        MLPSpec(kind="mlp", hidden=(16,), dropout=0.5),
        {"optimizer": "adamw", "lr": 0.01, "weight_decay": 0.1, "warmup_steps": 5},
    ),
    "cnn batch norm + dropout, label noise": (
        CNNSpec(kind="cnn", channels=(4, 8), batch_norm=True, dropout=0.1),
        {"lr": 0.01, "epochs": 1, "label_noise": 0.5},
    ),
    "cnn, sgd": (
        CNNSpec(kind="cnn", channels=(4, 8)),
        {"optimizer": "sgd", "lr": 0.05, "epochs": 1, "weight_decay": 1e-3},
    ),
    "resnet20": (ResNet20Spec(kind="resnet20", width=2), {"lr": 0.01, "steps": 6}),
}


@pytest.mark.parametrize("name", ARCHITECTURES)
def test_every_architecture_equals_sequential_training_bit_for_bit(name) -> None:
    model, training = ARCHITECTURES[name]
    pop = population(model, **training)
    assert supports_ensemble(pop)
    data = load_dataset(DATA)
    assert_equals_sequential(pop, data)


def test_a_dropout_model_does_not_depend_on_the_other_members() -> None:
    pop = population(MLPSpec(kind="mlp", hidden=(16,), batch_norm=True, dropout=0.3), lr=0.01)
    data = load_dataset(DATA)
    alone = train_ensemble(pop, data, [2], CPU)[0]
    among = train_ensemble(pop, data, [5, 2, 0], CPU)[1]
    assert same_weights(alone.model, among.model)


def test_the_fastest_exact_variant_is_taken() -> None:
    # Variant 0 is exact but slow, 1 fast but wrong, 2 fast and exact.
    def slow() -> int:
        time.sleep(0.03)
        return 1

    variants = [slow, lambda: 2, lambda: 1]
    assert stacked.fastest_exact(variants, lambda got: got == 1, CPU) == 2
    assert stacked.fastest_exact(variants[:2], lambda got: got == 1, CPU) == 0
    with pytest.raises(stacked.NotExact):
        stacked.fastest_exact(variants, lambda got: got == 3, CPU)


def test_a_probe_runs_once_per_process_and_shape(monkeypatch) -> None:
    calls = []
    probe = stacked._plan_linear

    def counted(*args: object) -> stacked._LinearPlan:
        calls.append(args)
        return probe(*args)

    monkeypatch.setattr(stacked, "_plan_linear", counted)
    monkeypatch.setattr(stacked, "OP_PLANS", {})
    pop = population()
    data = load_dataset(DATA)
    first = train_ensemble(pop, data, [0, 1], CPU)
    probed = len(calls)
    again = train_ensemble(pop, data, [0, 1], CPU)
    assert probed > 0 and len(calls) == probed  # the second ensemble reuses the plans
    assert all(same_weights(a.model, b.model) for a, b in zip(first, again, strict=True))
    train_ensemble(pop, data, [0, 1, 2], CPU)  # three replicates: other shapes, probed anew
    assert len(calls) > probed


@pytest.mark.parametrize(
    "training",
    [
        {"control": "permuted_labels"},
        {"control": "shuffled"},
        {"enmeshment": {"lam": 0.1, "k": 2}},  # its term reads the weights
    ],
)
def test_recipes_it_cannot_reproduce_are_trained_sequentially(tmp_path, training) -> None:
    pop = population(**training)
    assert not supports_ensemble(pop)
    data = load_dataset(DATA)
    with pytest.raises(NotBatchable):
        train_ensemble(pop, data, [0, 1], CPU)
    reps = obtain_replicates(pop, data, ModelCache(tmp_path), CPU, progress=False)
    assert {_trainer(tmp_path, r.key) for r in reps} == {"sequential"}


def test_no_exact_batched_arithmetic_falls_back_to_sequential(tmp_path, monkeypatch) -> None:
    # A bias gradient that no longer matches nn.Linear's: the probe must refuse to batch.
    wrong = (lambda g: g.sum(dim=1) * 1.5, lambda g: g.sum(dim=1) * 1.5)
    monkeypatch.setattr(stacked, "_GRAD_BIAS", wrong)
    monkeypatch.setattr(stacked, "OP_PLANS", {})  # probe again, with the wrong variants
    pop = population(lr=0.01)
    data = load_dataset(DATA)
    with pytest.raises(NotBatchable):
        train_ensemble(pop, data, [0, 1], CPU)
    reps = obtain_replicates(pop, data, ModelCache(tmp_path), CPU, progress=False)
    assert {_trainer(tmp_path, r.key) for r in reps} == {"sequential"}
    assert same_weights(reps[0].model, train_replicate(pop, data, 0, CPU).model)


def test_runner_trains_misses_as_an_ensemble_and_caches_each_replicate(tmp_path) -> None:
    pop = population(lr=0.01)
    data = load_dataset(DATA)
    first = obtain_replicates(pop, data, ModelCache(tmp_path), CPU, progress=False)
    assert [r.cache_hit for r in first] == [False, False, False]
    assert {_trainer(tmp_path, r.key) for r in first} == {"ensemble"}
    # One entry lost: only that seed is retrained (alone), to the same weights.
    _entry(tmp_path, first[1].key, "json").unlink()
    again = obtain_replicates(pop, data, ModelCache(tmp_path), CPU, progress=False)
    assert [r.cache_hit for r in again] == [True, False, True]
    assert [r.key for r in again] == [r.key for r in first]
    for a, b in zip(first, again, strict=True):
        assert same_weights(a.model, b.model)
    assert _trainer(tmp_path, again[1].key) == "sequential"


def _entry(root, key: str, ext: str):
    return root / "models" / key[:2] / f"{key}.{ext}"


def _trainer(root, key: str) -> str:
    return json.loads(_entry(root, key, "json").read_text())["trainer"]


@pytest.mark.parametrize(
    ("model", "jobs", "in_process"),
    [
        (MLPSpec(kind="mlp"), 2, True),
        (MLPSpec(kind="mlp"), 4, False),
        (CNNSpec(kind="cnn"), 2, False),
    ],
)
def test_jobs_go_to_the_pool_where_it_beats_the_ensemble(model, jobs, in_process) -> None:
    # The ensemble's measured speed-up (ensemble_speedup) against the pool's processes.
    pop = population(model)
    work = [(c, seed) for c in expand(pop) for seed in pop.seeds]
    assert _ensemble_is_faster(LocalPool(jobs), work, CPU) is in_process
