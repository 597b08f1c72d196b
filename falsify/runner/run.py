"""Running hypothesis files: validate against the real model, obtain replicates, test, report."""

from __future__ import annotations

import platform
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime, timezone
from importlib import metadata

import torch
from torch import nn

from falsify.data import Dataset, load_dataset
from falsify.errors import FalsifyError, LocatedError
from falsify.hooks import layer_names
from falsify.hypothesis.conditions import expand
from falsify.hypothesis.kinds import SHAPES
from falsify.hypothesis.loader import HypothesisFile
from falsify.models import build_model
from falsify.models.checkpoint import checkpoint_paths, load_checkpoint
from falsify.runner.cache import ModelCache, replicate_key
from falsify.runner.executors import Executor
from falsify.runner.outcome import Outcome
from falsify.runner.replicates import obtain_replicates, recipe_of
from falsify.shapes.base import run_shape
from falsify.units import default_layers, unit_view, weight_module

__all__ = ["Plan", "plan", "run_hypothesis"]

_PACKAGES = (
    "falsify",
    "torch",
    "numpy",
    "scipy",
    "statsmodels",
    "pandas",
    "scikit-learn",
    "captum",
)


@dataclass(frozen=True)
class Plan:
    """What running a validated hypothesis will do."""

    file: HypothesisFile
    data: Dataset
    n_replicates: int
    n_cached: int


def _layer_fields(
    spec: object, loc: tuple[str | int, ...]
) -> list[tuple[tuple[str | int, ...], str]]:
    """(location, layer name) of every entry of a ``layers`` field anywhere in ``spec``."""
    out: list[tuple[tuple[str | int, ...], str]] = []
    fields = getattr(type(spec), "model_fields", {})
    for name in fields:
        value = getattr(spec, name)
        if name in ("layers", "selectivity_layers", "enmeshment_layers") and isinstance(
            value, tuple
        ):
            out += [((*loc, name, i), layer) for i, layer in enumerate(value)]
        elif hasattr(type(value), "model_fields"):
            out += _layer_fields(value, (*loc, name))
        elif isinstance(value, tuple):
            for i, item in enumerate(value):
                if hasattr(type(item), "model_fields"):
                    out += _layer_fields(item, (*loc, name, i))
    return out


def _validate_against_model(hf: HypothesisFile, data: Dataset) -> None:
    """Checks that need the real model: layer names exist, then each shape's own checks."""
    hyp = hf.hypothesis
    with torch.random.fork_rng(devices=[]):
        model = build_model(hyp.population.model, data.input_shape, data.n_classes)
    names = layer_names(model)
    located = _layer_fields(hyp.test, ("test",))
    located += _layer_fields(hyp.population.training, ("population", "training"))
    for loc, layer in located:
        if layer not in names:
            raise hf.error(loc, f"one of {names}", layer, names)
        if "enmeshment_layers" not in loc:  # those name weights, not units
            unit_view(model, layer, loc)
    _check_enmeshment_layers(hf, model)
    if hyp.population.conditions and not hyp.test.compares_conditions:
        grid = [tag for tag, cls in SHAPES.items() if cls.compares_conditions]
        raise hf.error(
            ("population", "conditions"),
            f"empty for the {hyp.test.kind} test (only {grid} tests compare conditions)",
            dict(hyp.population.conditions),
        )
    hyp.test.check(hf, model, data)


def _check_enmeshment_layers(hf: HypothesisFile, model: nn.Module) -> None:
    """The enmeshment term's layers (named, or by default every unit layer) each are, or
    hold exactly one, linear or conv layer, whenever some condition switches the term on."""
    pop = hf.hypothesis.population
    lambdas = pop.conditions.get("training.enmeshment_lambda", (pop.training.enmeshment_lambda,))
    if all(lam == 0 for lam in lambdas):
        return
    named = pop.training.enmeshment_layers
    for layer in default_layers(model, named):
        try:
            weight_module(model, layer)
        except FalsifyError:
            raise hf.error(
                ("population", "training", "enmeshment_layers"),
                "layers that are, or hold exactly one, linear or conv layer (their weights are "
                f"clustered); {layer!r} is not" + ("" if named else " (a default unit layer)"),
                list(named),
            ) from None


@contextmanager
def _located(hf: HypothesisFile) -> Iterator[None]:
    """The one boundary where a :class:`LocatedError` raised anywhere below (data, model,
    checks, training, a shape's executor) becomes ``hf``'s one-line message with the line."""
    try:
        yield
    except LocatedError as exc:
        raise hf.error(exc.loc, exc.expected, exc.found, exc.choices) from None


def plan(hf: HypothesisFile, cache: ModelCache, device: torch.device) -> Plan:
    """Validate ``hf`` against its data and model and count the replicates already cached."""
    with _located(hf):
        return _plan(hf, cache, device)


def _plan(hf: HypothesisFile, cache: ModelCache, device: torch.device) -> Plan:
    pop = hf.hypothesis.population
    data = load_dataset(pop.data)
    _validate_against_model(hf, data)
    if _validate_checkpoints(hf, data):  # nothing to train: every replicate is supplied
        return Plan(hf, data, len(pop.seeds), len(pop.seeds))
    conditions = expand(pop)
    keys = [
        replicate_key(recipe_of(c.population), s, device) for c in conditions for s in pop.seeds
    ]
    return Plan(hf, data, len(keys), sum(cache.contains(k) for k in keys))


def _validate_checkpoints(hf: HypothesisFile, data: Dataset) -> bool:
    """No grid; every seed's checkpoint exists and fits the model; False when there are none."""
    pop = hf.hypothesis.population
    paths = checkpoint_paths(pop.model, pop.seeds)
    if paths and pop.conditions:
        raise hf.error(
            ("population", "conditions"),
            "empty with 'model.checkpoint' (checkpoints supply one trained model per seed, so "
            "a grid of training conditions cannot apply to them)",
            dict(pop.conditions),
        )
    for path in paths.values():
        with torch.random.fork_rng(devices=[]):
            load_checkpoint(build_model(pop.model, data.input_shape, data.n_classes), path)
    return bool(paths)


def _versions() -> dict[str, str]:
    out = {"python": platform.python_version()}
    for name in _PACKAGES:
        try:
            out[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            out[name] = "not installed"
    return out


def run_hypothesis(
    hf: HypothesisFile,
    cache: ModelCache,
    device: torch.device,
    progress: bool = True,
    executor: Executor | None = None,
) -> Outcome:
    """Train or load the population, run the test, and return the outcome (nothing written)."""
    start = time.perf_counter()
    with _located(hf):
        p = _plan(hf, cache, device)
        pop = hf.hypothesis.population
        reps = obtain_replicates(pop, p.data, cache, device, progress, executor)
        evidence, table, verdict = run_shape(hf, p.data, reps)
    provenance = {
        "file": str(hf.path),
        "file_sha256": hf.sha256,
        "overrides": list(hf.overrides),
        "device": str(device)
        + (f" ({torch.cuda.get_device_name(device)})" if device.type == "cuda" else ""),
        "torch_threads": torch.get_num_threads(),
        "executor": type(executor).__name__ if executor else "in-process",
        "jobs": executor.jobs if executor else 1,
        "seeds": list(dict.fromkeys(r.seed for r in reps)),
        "cache_hits": sum(r.cache_hit for r in reps),
        "replicates": len(reps),
        "wall_seconds": time.perf_counter() - start,
        "platform": platform.platform(),
        "versions": _versions(),
        "cache_keys": {
            (f"{r.condition} / " if r.condition else "") + f"seed {r.seed}": r.key[:16]
            for r in reps
        },
        "finished_at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
    }
    return Outcome(
        file=hf,
        verdict=verdict,
        parts=table,
        replicates=evidence.replicates,
        tidy=evidence.tidy,
        tidy_grain=evidence.tidy_grain,
        labels=evidence.labels,
        figures=evidence.figures,
        notes=evidence.notes,
        provenance=provenance,
    )
