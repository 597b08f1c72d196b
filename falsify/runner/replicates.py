"""Obtaining a population's trained models: from the cache, or trained and then cached."""

from __future__ import annotations

import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn
from tqdm import tqdm

from falsify.data import Dataset
from falsify.hypothesis.schema import Population
from falsify.models import build_model
from falsify.models.ensemble import NotBatchable, supports_ensemble, train_ensemble
from falsify.models.training import TrainResult, train_replicate
from falsify.runner.cache import ModelCache, replicate_key

__all__ = ["Replicate", "obtain_replicates", "recipe_of"]


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


def obtain_replicates(
    population: Population,
    data: Dataset,
    cache: ModelCache,
    device: torch.device,
    progress: bool = True,
) -> list[Replicate]:
    """Every seed's model: cached ones loaded, the rest trained (as one ensemble when the recipe
    allows it, bit-identical to training them one by one) and then cached per replicate."""
    recipe = recipe_of(population)
    found: dict[int, Replicate] = {}
    missing: list[int] = []
    for seed in population.seeds:
        key = replicate_key(recipe, seed, device)
        with torch.random.fork_rng(devices=[]):
            model = build_model(population.model, data.input_shape, data.n_classes).to(device)
        info = cache.load(key, model)
        if info is None:
            missing.append(seed)
            continue
        model.eval()
        found[seed] = Replicate(seed, model, key, True, info["test_accuracy"], info["train_loss"])
    for seed, trained, seconds, trainer in _train(population, data, missing, device, progress):
        key = replicate_key(recipe, seed, device)
        info = {
            "recipe": recipe,
            "seed": seed,
            "device": device.type,
            "torch": torch.__version__,
            "test_accuracy": trained.test_accuracy,
            "train_loss": trained.train_loss,
            "train_seconds": seconds,
            "trainer": trainer,
        }
        cache.save(key, trained.model, info)
        found[seed] = Replicate(
            seed, trained.model, key, False, trained.test_accuracy, trained.train_loss
        )
    return [found[seed] for seed in population.seeds]


def _train(
    population: Population,
    data: Dataset,
    seeds: list[int],
    device: torch.device,
    progress: bool,
) -> Iterator[tuple[int, TrainResult, float, str]]:
    """``(seed, result, seconds, trainer)`` per seed; an ensemble's time is shared equally."""
    if len(seeds) > 1 and supports_ensemble(population):
        start = time.perf_counter()
        try:
            results = train_ensemble(population, data, seeds, device)
        except NotBatchable:
            pass
        else:
            each = (time.perf_counter() - start) / len(seeds)
            yield from ((s, r, each, "ensemble") for s, r in zip(seeds, results, strict=True))
            return
    bar = tqdm(seeds, desc="replicates", unit="model", disable=not progress, leave=False)
    for seed in bar:
        start = time.perf_counter()
        trained = train_replicate(population, data, seed, device)
        yield seed, trained, time.perf_counter() - start, "sequential"
