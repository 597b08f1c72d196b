"""Checkpoints during training: models kept after listed epochs, and outcomes read at them.

A recipe with ``training.checkpoint_epochs: [5, 10]`` keeps each replicate's weights after 5
and 10 epochs of its run; :func:`falsify.runner.replicates.train_seeds` trains them with the
model and the cache stores each as a model of its own, keyed by the replicate's recipe, seed and
epoch (:func:`falsify.runner.cache.checkpoint_key`). An outcome with ``at_epoch: 5`` is read on
that checkpoint (docs/between-conditions.md, "Outcomes during training"). The checkpoint after e
epochs is the model the same recipe gives when trained for e epochs at the same seed, since no
schedule of the training loop depends on the number of epochs still to come (tests/
test_windows.py); a regularizer's window is the one exception, as it counts epochs of the run
it belongs to.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import replace

import torch
from pydantic import BaseModel

from falsify.data import Dataset
from falsify.errors import FalsifyError, LocatedError
from falsify.hypothesis.conditions import Condition, expand
from falsify.hypothesis.kinds import OutcomeKind
from falsify.hypothesis.schema import Hypothesis, Population
from falsify.runner.cache import ModelCache, checkpoint_key
from falsify.runner.replicates import Replicate, _load, _save, recipe_of, train_seeds

__all__ = ["check_checkpoints", "with_checkpoints"]

Loc = tuple[str | int, ...]


def _outcomes(spec: object, loc: Loc) -> Iterator[tuple[Loc, OutcomeKind]]:
    """Every outcome anywhere in ``spec``, with its location in the file."""
    if isinstance(spec, OutcomeKind):
        yield loc, spec
        return
    if isinstance(spec, BaseModel):
        for name in type(spec).model_fields:
            yield from _outcomes(getattr(spec, name), (*loc, name))
    elif isinstance(spec, tuple):
        for i, item in enumerate(spec):
            yield from _outcomes(item, (*loc, i))


def check_checkpoints(hypothesis: Hypothesis) -> None:
    """Before training: every ``at_epoch`` an outcome reads is a checkpoint of every condition,
    and a model loaded from the user's files (``model.checkpoint``) keeps none."""
    pop = hypothesis.population
    conditions = expand(pop)
    if getattr(pop.model, "checkpoint", None) is not None:
        for cond in conditions:
            if cond.population.training.checkpoint_epochs:
                raise LocatedError(
                    ("population", "training", "checkpoint_epochs"),
                    "empty with 'model.checkpoint' (a model loaded from files is not trained "
                    "here, so it has no epochs to keep)",
                    list(cond.population.training.checkpoint_epochs),
                )
    for loc, outcome in _outcomes(hypothesis.test, ("test",)):
        if outcome.at_epoch is None:
            continue
        for cond in conditions:
            kept = list(cond.population.training.checkpoint_epochs)
            if outcome.at_epoch not in kept:
                where = f" (in condition {cond.name})" if cond.name else ""
                raise LocatedError(
                    (*loc, "at_epoch"),
                    "one of the epochs the population keeps checkpoints at, "
                    f"'population.training.checkpoint_epochs' {kept}{where}",
                    outcome.at_epoch,
                )


def with_checkpoints(
    population: Population,
    replicates: list[Replicate],
    data: Dataset,
    cache: ModelCache,
    device: torch.device,
) -> list[Replicate]:
    """Each replicate with the checkpoints its condition keeps, loaded from the cache.

    A checkpoint the cache lacks (its model was cached by a recipe without it, or the entry is
    damaged) is made by training the replicate again at its seed, under its lock; training is
    deterministic, so the model saved again is the one already cached.
    """
    by_name = {c.name: c for c in expand(population)}
    return [_with_checkpoints(by_name[r.condition], r, data, cache, device) for r in replicates]


def _with_checkpoints(
    condition: Condition, rep: Replicate, data: Dataset, cache: ModelCache, device: torch.device
) -> Replicate:
    epochs = condition.population.training.checkpoint_epochs
    if not epochs:
        return rep
    recipe = recipe_of(condition.population)
    keys = {e: checkpoint_key(recipe, e, rep.seed, device) for e in epochs}
    found = {
        e: _load((condition, rep.seed), key, data, cache, device)[0] for e, key in keys.items()
    }
    if any(r is None for r in found.values()):
        with cache.lock([rep.key, *keys.values()]):
            if not all(cache.verified(k) for k in keys.values()):
                pop = condition.population
                for result in train_seeds(pop, data, [rep.seed], device, False):
                    _save(pop, device, cache, *result)
                rep = replace(rep, cache_hit=False)  # its run was trained again just now
        hit = {e: found[e] is not None for e in epochs}
        found = {
            e: _load((condition, rep.seed), key, data, cache, device, hit[e])[0]
            for e, key in keys.items()
        }
    missing = [e for e, r in found.items() if r is None]
    if missing:
        raise FalsifyError(
            f"The checkpoint of seed {rep.seed} after {missing[0]} epochs was trained but is not "
            f"readable in the cache folder {cache.root}: it must be writable and not full."
        )
    return replace(rep, checkpoints={e: r for e, r in found.items() if r is not None})
