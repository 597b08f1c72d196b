"""Obtaining a population's trained models: from the cache, or trained and then cached."""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn
from tqdm import tqdm

from falsify.data import Dataset
from falsify.hypothesis.schema import Population
from falsify.models import build_model
from falsify.models.checkpoint import checkpoint_paths, file_sha256, load_checkpoint
from falsify.models.training import evaluate, train_replicate
from falsify.runner.cache import ModelCache, replicate_key
from falsify.runner.identity import population_identity

__all__ = ["Replicate", "checkpointed_replicates", "obtain_replicates", "recipe_of"]


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
    recipe = population.model_dump(mode="json", exclude={"seeds"})
    identity = population_identity(population)
    if identity:  # only for user code and data folders, so built-in keys are unchanged
        recipe["identity"] = identity
    return recipe


def obtain_replicates(
    population: Population,
    data: Dataset,
    cache: ModelCache,
    device: torch.device,
    progress: bool = True,
) -> list[Replicate]:
    if getattr(population.model, "checkpoint", None) is not None:
        return checkpointed_replicates(population, data, device)
    recipe = recipe_of(population)
    out: list[Replicate] = []
    bar = tqdm(population.seeds, desc="replicates", unit="model", disable=not progress, leave=False)
    for seed in bar:
        key = replicate_key(recipe, seed, device)
        with torch.random.fork_rng(devices=[]):
            model = build_model(population.model, data.input_shape, data.n_classes).to(device)
        info = cache.load(key, model)
        if info is not None:
            model.eval()
            out.append(Replicate(seed, model, key, True, info["test_accuracy"], info["train_loss"]))
            continue
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
        out.append(
            Replicate(seed, trained.model, key, False, trained.test_accuracy, trained.train_loss)
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
