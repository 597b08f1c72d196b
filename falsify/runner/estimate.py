"""Roughly how long training a population will take on this machine, from a timing probe.

The probe trains one condition's seeds (together, as a run would) for one step to warm up,
then for one and for ``_PROBE_STEPS`` optimizer steps on a slice of the training set, with the real model, recipe
and regularizers. The difference gives the time of one step, the first probe the fixed cost
of a replicate (building, evaluating); the estimate is ``fixed + step × steps per epoch ×
epochs`` for each replicate not yet in the cache. Measures and interventions after training
are not included. See docs/performance.md.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, replace

import torch

from falsify.data import Dataset
from falsify.hypothesis.conditions import Condition, expand
from falsify.hypothesis.schema import Population
from falsify.runner.cache import ModelCache, replicate_key
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
    population: Population, data: Dataset, seeds: list[int], steps: int, device: torch.device
) -> float:
    """Seconds to train ``seeds`` for ``steps`` optimizer steps of one epoch, as a run does."""
    bs = population.training.batch_size
    n = min(len(data.y_train), steps * bs)
    small = replace(data, x_train=data.x_train[:n], y_train=data.y_train[:n])
    probe = population.model_copy(
        update={"training": population.training.model_copy(update={"epochs": 1})}
    )
    start = time.perf_counter()
    for _ in train_seeds(probe, small, seeds, device, False):
        pass
    return time.perf_counter() - start


def _key(condition: Condition, seed: int, device: torch.device) -> str:
    return replicate_key(recipe_of(condition.population), seed, device)


def _probed(condition: Condition) -> bool:
    return any(r.active for r in condition.population.training.regularizers())


def estimate_training(
    population: Population, data: Dataset, cache: ModelCache, device: torch.device
) -> Estimate:
    """The estimated time to train every replicate of ``population`` not yet in ``cache``.

    One condition is probed (the first with an active regularizer, whose extra loss terms
    cost the most, else the first) and its per-replicate time stands for every condition.
    """
    conditions = expand(population)
    missing = [
        [s for s in population.seeds if not cache.contains(_key(c, s, device))] for c in conditions
    ]
    to_train = sum(map(len, missing))
    cached = len(conditions) * len(population.seeds) - to_train
    if to_train == 0:
        return Estimate(0, cached, 0.0)
    probed = next((c for c in conditions if _probed(c)), conditions[0])
    seeds = next((m for m in missing if m), [])
    pop = probed.population
    total_steps = _steps_per_epoch(pop, len(data.y_train)) * pop.training.epochs
    probe_steps = min(_PROBE_STEPS, _steps_per_epoch(pop, len(data.y_train)))
    with torch.random.fork_rng(devices=[]):
        _probe(pop, data, seeds, 1, device)  # warm-up: first calls allocate and dispatch
        first = _probe(pop, data, seeds, 1, device) / len(seeds)
        more = _probe(pop, data, seeds, probe_steps, device) / len(seeds)
    # Too short a probe on a busy machine can time the longer run faster; then its mean
    # step (fixed cost included) is the conservative stand-in.
    if probe_steps > 1 and more > first:
        step = (more - first) / (probe_steps - 1)
    else:
        step = more / probe_steps
    fixed = max(first - step, 0.0)
    return Estimate(to_train, cached, to_train * (fixed + step * total_steps))
