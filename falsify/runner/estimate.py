"""Roughly how long training a population will take on this machine, from a timing probe.

The probe trains each condition's uncached seeds (together where a run would) for one and
for ``_PROBE_STEPS`` optimizer steps on a slice of the training set, with the real model,
recipe and regularizers, after one warm-up step; each is timed twice and the faster kept.
The difference gives the time of one step, the one-step probe the fixed cost of a replicate
(building, evaluating); the estimate is ``fixed + step × steps per epoch × epochs`` for each
replicate not yet in the cache. Measures and interventions after training
are not included. See docs/performance.md.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, replace

import torch
from torch.utils.data import Subset

from falsify.data import Dataset
from falsify.data.stream import StreamedDataset
from falsify.hypothesis.conditions import Condition, expand
from falsify.hypothesis.schema import Population
from falsify.runner.cache import ModelCache, checkpoint_key, replicate_key
from falsify.runner.replicates import recipe_of, train_seeds

__all__ = ["Estimate", "estimate_training", "format_duration"]

_PROBE_STEPS = 8


@dataclass(frozen=True)
class Estimate:
    """Replicates to train, replicates cached, and the estimated training time in seconds."""

    to_train: int
    cached: int
    seconds: float

    @property
    def hours(self) -> float:
        return self.seconds / 3600


def format_duration(seconds: float) -> str:
    """``"40 s"``, ``"12 min"``, ``"3.5 h"``, ``"2.1e+05 h"``."""
    if seconds < 90:
        return f"{seconds:.0f} s"
    if seconds < 5400:
        return f"{seconds / 60:.0f} min"
    return f"{seconds / 3600:.2g} h" if seconds < 3.6e7 else f"{seconds / 3600:.2e} h"


def _steps_per_epoch(population: Population, n: int) -> int:
    return -(-n // population.training.batch_size)


def _probe(
    population: Population,
    data: Dataset | StreamedDataset,
    seeds: list[int],
    steps: int,
    device: torch.device,
) -> float:
    """Seconds to train ``seeds`` for ``steps`` optimizer steps of one epoch, as a run does."""
    bs = population.training.batch_size
    n = min(len(data.y_train), steps * bs)
    if isinstance(data, StreamedDataset):
        small: Dataset | StreamedDataset = replace(
            data, train=Subset(data.train, range(n)), y_train=data.y_train[:n]
        )
    else:
        small = replace(data, x_train=data.x_train[:n], y_train=data.y_train[:n])
    # One epoch of the slice is ``steps`` steps; a recipe's own ``steps`` would instead train
    # that many steps on the slice (as many epochs as it takes).
    probe = population.model_copy(
        update={"training": population.training.model_copy(update={"epochs": 1, "steps": None})}
    )
    start = time.perf_counter()
    for _ in train_seeds(probe, small, seeds, device, False):
        pass
    return time.perf_counter() - start


def _cached(condition: Condition, seed: int, cache: ModelCache, device: torch.device) -> bool:
    """Whether the replicate and every checkpoint its recipe keeps are in ``cache`` (a missing
    checkpoint retrains the replicate: falsify.runner.checkpoints)."""
    recipe = recipe_of(condition.population)
    keys = [replicate_key(recipe, seed, device)]
    keys += [
        checkpoint_key(recipe, e, seed, device)
        for e in condition.population.training.checkpoint_epochs
    ]
    return all(cache.contains(k) for k in keys)


def estimate_training(
    population: Population,
    data: Dataset | StreamedDataset,
    cache: ModelCache,
    device: torch.device,
    probe: bool = True,
) -> Estimate:
    """The estimated time to train every replicate of ``population`` not yet in ``cache``.

    Every condition with an uncached seed is probed: conditions differ in cost (a regularizer's
    extra loss terms; batch norm or label noise, which train one seed at a time). With
    ``probe=False`` only the replicates are counted and ``seconds`` is NaN.
    """
    conditions = expand(population)
    missing = [
        [s for s in population.seeds if not _cached(c, s, cache, device)] for c in conditions
    ]
    to_train = sum(map(len, missing))
    cached = len(conditions) * len(population.seeds) - to_train
    if to_train == 0:
        return Estimate(0, cached, 0.0)
    if not probe:
        return Estimate(to_train, cached, math.nan)
    seconds = 0.0
    with torch.random.fork_rng(devices=[]):
        warm = next(i for i, m in enumerate(missing) if m)
        # warm-up: the first calls import, allocate and dispatch
        _probe(conditions[warm].population, data, missing[warm], 1, device)
        for condition, seeds in zip(conditions, missing, strict=True):
            if seeds:
                seconds += len(seeds) * _per_replicate(condition.population, data, seeds, device)
    return Estimate(to_train, cached, seconds)


def _per_replicate(
    population: Population, data: Dataset | StreamedDataset, seeds: list[int], device: torch.device
) -> float:
    """Estimated seconds to train one of ``seeds`` under ``population``'s whole recipe."""
    per_epoch = _steps_per_epoch(population, len(data.y_train))
    k = min(_PROBE_STEPS, per_epoch)
    # The fastest of two tries: on a shared machine a try is only ever slowed down.
    first = min(_probe(population, data, seeds, 1, device) for _ in range(2)) / len(seeds)
    more = min(_probe(population, data, seeds, k, device) for _ in range(2)) / len(seeds)
    # Too short a probe can time the longer run faster; then its mean step (fixed cost
    # included) is the conservative stand-in.
    step = (more - first) / (k - 1) if k > 1 and more > first else more / k
    fixed = max(first - step, 0.0)
    training = population.training
    steps = training.steps if training.steps is not None else per_epoch * training.epochs
    return fixed + step * steps
