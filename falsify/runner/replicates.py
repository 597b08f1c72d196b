"""Obtaining a population's trained models: from the cache, or trained and then cached."""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn
from tqdm import tqdm

from falsify.data import Dataset, load_dataset
from falsify.hypothesis.schema import Population
from falsify.models import build_model
from falsify.models.training import train_replicate
from falsify.runner.cache import ModelCache, replicate_key
from falsify.runner.executors import Executor, threads_per_job

__all__ = ["Replicate", "obtain_replicates", "recipe_of", "train_to_cache"]


@dataclass(frozen=True)
class Replicate:
    """One trained model: the unit of statistical inference."""

    seed: int
    model: nn.Module
    key: str
    cache_hit: bool
    test_accuracy: float
    train_loss: float


def recipe_of(population: Population) -> dict[str, Any]:
    """Everything but the seeds that determines a replicate's weights, as plain JSON."""
    return population.model_dump(mode="json", exclude={"seeds"})


def _train_and_save(
    population: Population, data: Dataset, seed: int, device: torch.device, cache: ModelCache
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
        "train_seconds": time.perf_counter() - start,
    }
    cache.save(key, trained.model, info)
    return Replicate(seed, trained.model, key, False, trained.test_accuracy, trained.train_loss)


def train_to_cache(
    population_json: dict[str, Any], seed: int, device: str, cache_root: str, threads: int
) -> int:
    """A job's entry point (plain, picklable arguments): train one replicate into the cache."""
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
    """Every replicate of ``population``: from the cache, or trained and then cached.

    With an ``executor``, the missing replicates are first trained as independent jobs that
    write to the cache; they are then loaded like any cached replicate.
    """
    recipe = recipe_of(population)
    keys = {seed: replicate_key(recipe, seed, device) for seed in population.seeds}
    missing = [seed for seed in population.seeds if not cache.contains(keys[seed])]
    if executor is not None and len(missing) > 1:
        threads = threads_per_job(executor.jobs)
        payload = population.model_dump(mode="json")
        jobs = [
            (payload, seed, dev, str(cache.root), threads)
            for seed, dev in zip(missing, _job_devices(device, len(missing)), strict=True)
        ]
        done = executor.map(train_to_cache, jobs)
        for _ in tqdm(
            done, total=len(jobs), desc="training", unit="model", disable=not progress, leave=False
        ):
            pass
    out: list[Replicate] = []
    bar = tqdm(population.seeds, desc="replicates", unit="model", disable=not progress, leave=False)
    for seed in bar:
        with torch.random.fork_rng(devices=[]):
            model = build_model(population.model, data.input_shape, data.n_classes).to(device)
        info = cache.load(keys[seed], model)
        if info is None:
            out.append(_train_and_save(population, data, seed, device, cache))
            continue
        model.eval()
        hit = seed not in missing
        out.append(
            Replicate(seed, model, keys[seed], hit, info["test_accuracy"], info["train_loss"])
        )
    return out
