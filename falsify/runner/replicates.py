"""Obtaining a population's trained models: from the cache, or trained and then cached."""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn
from tqdm import tqdm

from falsify.data import Dataset, load_dataset
from falsify.errors import FalsifyError
from falsify.hypothesis.conditions import expand
from falsify.hypothesis.schema import ENMESHMENT_FIELDS, Population
from falsify.models import build_model
from falsify.models.checkpoint import checkpoint_paths, file_sha256, load_checkpoint
from falsify.models.training import evaluate, train_replicate
from falsify.runner.cache import ModelCache, replicate_key
from falsify.runner.executors import Executor, threads_per_job
from falsify.runner.identity import population_identity

__all__ = [
    "Replicate",
    "checkpointed_replicates",
    "obtain_replicates",
    "recipe_of",
    "train_to_cache",
]


@dataclass(frozen=True)
class Replicate:
    """One trained model: the unit of statistical inference."""

    seed: int
    model: nn.Module
    key: str
    cache_hit: bool
    test_accuracy: float
    train_loss: float
    condition: str = ""  # the grid condition's name; "" for a population without conditions
    metrics: dict[str, float] = field(default_factory=dict)  # recorded at training time


def recipe_of(population: Population) -> dict[str, Any]:
    """Everything but the seeds that determines a replicate's weights, as plain JSON.

    For a population with conditions, call it on each condition's resolved population
    (:func:`falsify.hypothesis.conditions.expand`).
    """
    recipe = population.model_dump(mode="json", exclude={"seeds", "conditions"})
    if population.training.enmeshment_lambda == 0:
        for name in ENMESHMENT_FIELDS:
            recipe["training"].pop(name)
    identity = population_identity(population)
    if identity:  # only for user code and data folders, so built-in keys are unchanged
        recipe["identity"] = identity
    return recipe


def _train_and_save(
    population: Population,
    data: Dataset,
    seed: int,
    device: torch.device,
    cache: ModelCache,
    condition: str = "",
) -> Replicate:
    recipe = recipe_of(population)
    key = replicate_key(recipe, seed, device)
    start = time.perf_counter()
    trained = train_replicate(population, data, seed, device)
    info = {
        "recipe": recipe,
        "seed": seed,
        "device": device.type,
        "torch": torch.__version__,
        "test_accuracy": trained.test_accuracy,
        "train_loss": trained.train_loss,
        "metrics": trained.metrics,
        "train_seconds": time.perf_counter() - start,
    }
    cache.save(key, trained.model, info)
    return Replicate(
        seed,
        trained.model,
        key,
        False,
        trained.test_accuracy,
        trained.train_loss,
        condition,
        trained.metrics,
    )


def train_to_cache(
    population_json: dict[str, Any], seed: int, device: str, cache_root: str, threads: int
) -> int:
    """A job's entry point (plain, picklable arguments): train one replicate into the cache.

    ``population_json`` is one condition's resolved population (no conditions of its own).
    """
    torch.set_num_threads(threads)
    population = Population.model_validate(population_json)
    _train_and_save(
        population,
        load_dataset(population.data),
        seed,
        torch.device(device),
        ModelCache(cache_root),
    )
    return seed


def _job_devices(device: torch.device, n: int) -> list[str]:
    """Share the visible GPUs round-robin between jobs; CPU jobs all use the CPU."""
    if device.type != "cuda" or device.index is not None:
        return [str(device)] * n
    gpus = max(1, torch.cuda.device_count())
    return [f"cuda:{i % gpus}" for i in range(n)]


def obtain_replicates(
    population: Population,
    data: Dataset,
    cache: ModelCache,
    device: torch.device,
    progress: bool = True,
    executor: Executor | None = None,
) -> list[Replicate]:
    """Every replicate of every condition (condition-major, seeds in file order).

    Replicates come from the cache, or are trained and then cached. With an ``executor``, the
    missing replicates are first trained as independent jobs that write to the cache; they are
    then loaded like any cached replicate. A population with checkpoints is loaded from them.
    """
    if getattr(population.model, "checkpoint", None) is not None:
        return checkpointed_replicates(population, data, device)
    jobs = [(c, seed) for c in expand(population) for seed in population.seeds]
    keys = [replicate_key(recipe_of(c.population), seed, device) for c, seed in jobs]
    missing = {i for i, key in enumerate(keys) if not cache.contains(key)}
    if executor is not None and len(missing) > 1:
        threads = threads_per_job(executor.jobs)
        todo = sorted(missing)
        devices = _job_devices(device, len(todo))
        args = [
            (
                jobs[i][0].population.model_dump(mode="json"),
                jobs[i][1],
                dev,
                str(cache.root),
                threads,
            )
            for i, dev in zip(todo, devices, strict=True)
        ]
        done = executor.map(train_to_cache, args)
        for _ in tqdm(
            done, total=len(args), desc="training", unit="model", disable=not progress, leave=False
        ):
            pass
        lost = sorted({jobs[i][1] for i in todo if not cache.contains(keys[i])})
        if lost:
            raise FalsifyError(
                f"Training jobs for seeds {lost} finished but their models are not in the cache "
                f"folder {cache.root}: with a cluster, --cache must be a folder every node shares."
            )
    out: list[Replicate] = []
    bar = tqdm(range(len(jobs)), desc="replicates", unit="model", disable=not progress, leave=False)
    for i in bar:
        condition, seed = jobs[i]
        pop = condition.population
        with torch.random.fork_rng(devices=[]):
            model = build_model(pop.model, data.input_shape, data.n_classes).to(device)
        info = cache.load(keys[i], model)
        if info is None:
            out.append(_train_and_save(pop, data, seed, device, cache, condition.name))
            continue
        model.eval()
        out.append(
            Replicate(
                seed,
                model,
                keys[i],
                i not in missing,
                info["test_accuracy"],
                info["train_loss"],
                condition.name,
                info.get("metrics", {}),
            )
        )
    return out


def checkpointed_replicates(
    population: Population, data: Dataset, device: torch.device
) -> list[Replicate]:
    """The population's models from the user's checkpoints, evaluated as they are.

    Nothing is trained or cached; the key is the checkpoint file's SHA-256, and the training
    loss is unknown (NaN).
    """
    out: list[Replicate] = []
    for seed, path in checkpoint_paths(population.model, population.seeds).items():
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            model = build_model(population.model, data.input_shape, data.n_classes)
        model = load_checkpoint(model, path).to(device)
        acc = evaluate(model, data.x_test.to(device), data.y_test.to(device))
        out.append(Replicate(seed, model, file_sha256(path), False, acc, float("nan")))
    return out
