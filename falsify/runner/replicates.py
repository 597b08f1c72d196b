"""Obtaining a population's trained models: from the cache, or trained and then cached."""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn
from tqdm import tqdm

from falsify.data import Dataset
from falsify.hypothesis.conditions import expand
from falsify.hypothesis.schema import Population
from falsify.models import build_model
from falsify.models.training import train_replicate
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
    condition: str = ""  # the grid condition's name; "" for a population without conditions
    metrics: dict[str, float] = field(default_factory=dict)  # recorded at training time


def recipe_of(population: Population) -> dict[str, Any]:
    """Everything but the seeds that determines a replicate's weights, as plain JSON.

    For a population with conditions, call it on each condition's resolved population
    (:func:`falsify.hypothesis.conditions.expand`).
    """
    return population.model_dump(mode="json", exclude={"seeds", "conditions"})


def obtain_replicates(
    population: Population,
    data: Dataset,
    cache: ModelCache,
    device: torch.device,
    progress: bool = True,
) -> list[Replicate]:
    """Every replicate of every condition (condition-major, seeds in file order)."""
    jobs = [(c, seed) for c in expand(population) for seed in population.seeds]
    out: list[Replicate] = []
    bar = tqdm(jobs, desc="replicates", unit="model", disable=not progress, leave=False)
    for condition, seed in bar:
        pop = condition.population
        recipe = recipe_of(pop)
        key = replicate_key(recipe, seed, device)
        with torch.random.fork_rng(devices=[]):
            model = build_model(pop.model, data.input_shape, data.n_classes).to(device)
        info = cache.load(key, model)
        if info is not None:
            model.eval()
            out.append(
                Replicate(
                    seed,
                    model,
                    key,
                    True,
                    info["test_accuracy"],
                    info["train_loss"],
                    condition.name,
                    info.get("metrics", {}),
                )
            )
            continue
        start = time.perf_counter()
        trained = train_replicate(pop, data, seed, device)
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
        out.append(
            Replicate(
                seed,
                trained.model,
                key,
                False,
                trained.test_accuracy,
                trained.train_loss,
                condition.name,
                trained.metrics,
            )
        )
    return out
