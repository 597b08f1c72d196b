"""Running hypothesis files: validate against the real model, obtain replicates, test, report."""

from __future__ import annotations

import platform
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime, timezone
from importlib import metadata

import pandas as pd
import torch
from torch import nn

from falsify._version import __version__
from falsify.data import Dataset, load_dataset
from falsify.data.stream import StreamedDataset, first_inputs
from falsify.errors import FalsifyError, LocatedError
from falsify.hooks import layer_names
from falsify.hypothesis.conditions import expand
from falsify.hypothesis.kinds import REGISTRIES, SHAPES, check_against_data, kinds_in
from falsify.hypothesis.loader import HypothesisFile
from falsify.hypothesis.schema import Population
from falsify.hypothesis.types import LayerNames
from falsify.models import build_model
from falsify.models.checkpoint import checkpoint_paths, load_checkpoint
from falsify.models.memory import check_fits
from falsify.runner.cache import ModelCache
from falsify.runner.checkpoints import check_checkpoints, with_checkpoints
from falsify.runner.estimate import estimate_training, format_duration
from falsify.runner.executors import Executor, threads_per_job
from falsify.runner.outcome import Outcome
from falsify.runner.provenance import git_state
from falsify.runner.replicates import Replicate, obtain_replicates, screen_replicates
from falsify.shapes.base import run_shape
from falsify.stats.resampling import check_method
from falsify.units import check_undeclared, unit_view, weight_module

__all__ = ["Plan", "plan", "run_hypothesis"]

_PACKAGES = (
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
    data: Dataset | StreamedDataset
    n_replicates: int
    n_cached: int
    seconds: (
        float  # the estimated time to train the replicates not cached (estimate.py); NaN unprobed
    )


def _layer_fields(
    spec: object, loc: tuple[str | int, ...]
) -> list[tuple[tuple[str | int, ...], str, str]]:
    """(location, layer name, what it must hold) of every entry of every field marked
    :class:`LayerNames` anywhere in ``spec``."""
    out: list[tuple[tuple[str | int, ...], str, str]] = []
    fields = getattr(type(spec), "model_fields", {})
    for name, info in fields.items():
        value = getattr(spec, name)
        marks = [m for m in info.metadata if isinstance(m, LayerNames)]
        if marks and isinstance(value, tuple):
            out += [((*loc, name, i), layer, marks[0].holds) for i, layer in enumerate(value)]
        elif hasattr(type(value), "model_fields"):
            out += _layer_fields(value, (*loc, name))
        elif isinstance(value, tuple):
            for i, item in enumerate(value):
                if hasattr(type(item), "model_fields"):
                    out += _layer_fields(item, (*loc, name, i))
    return out


def _validate_against_model(hf: HypothesisFile, data: Dataset | StreamedDataset) -> None:
    """Checks that need the real model: layer names exist and hold what their field reads,
    each regularizer's own checks wherever some condition switches it on, each kind's checks
    against the data, then the shape's."""
    hyp = hf.hypothesis
    with torch.random.fork_rng(devices=[]):
        model = build_model(hyp.population.model, data.input_shape, data.n_classes)
    names = layer_names(model)
    located = _layer_fields(hyp.test, ("test",))
    located += _layer_fields(hyp.population.training, ("population", "training"))
    for loc, layer, holds in located:
        if layer not in names:
            raise hf.error(loc, f"one of {names}", layer, names)
        if holds == "units":
            unit_view(model, layer, loc)
        else:
            _holds_weights(hf, model, layer, loc)
    unit_fields = {layer: loc for loc, layer, holds in located if holds == "units"}
    check_undeclared(model.eval(), unit_fields, first_inputs(data.split("test")[0], 2))
    _check_regularizers(hyp.population, model, data)
    check_checkpoints(hyp)
    if hyp.population.conditions and not hyp.test.compares_conditions:
        grid = [tag for tag, cls in SHAPES.items() if cls.compares_conditions]
        raise hf.error(
            ("population", "conditions"),
            f"empty for the {hyp.test.kind} test (only {grid} tests compare conditions)",
            dict(hyp.population.conditions),
        )
    pred = hyp.prediction
    check_method(pred.method, pred.alpha, len(hyp.population.seeds), "this population")
    check_against_data(hyp.test, data, ("test",))
    hyp.test.check(hf, model, data)


def _holds_weights(
    hf: HypothesisFile, model: nn.Module, layer: str, loc: tuple[str | int, ...]
) -> None:
    try:
        weight_module(model, layer)
    except FalsifyError:
        raise hf.error(
            loc,
            "a layer that is, or holds exactly one, linear or conv layer (its weights are read)",
            layer,
        ) from None


def _check_regularizers(
    population: Population, model: nn.Module, data: Dataset | StreamedDataset
) -> None:
    """Each regularizer's own checks (against the model, then the data), once per distinct
    setting some condition switches on."""
    seen: set[str] = set()
    for condition in expand(population):
        training = condition.population.training
        for name, regularizer in zip(training.blocks(), training.regularizers(), strict=True):
            key = f"{name}:{regularizer.model_dump_json()}"
            if regularizer.active and key not in seen:
                seen.add(key)
                regularizer.check(model, ("population", "training", name))
                regularizer.check_data(data, ("population", "training", name))


@contextmanager
def _located(hf: HypothesisFile) -> Iterator[None]:
    """The one boundary where a :class:`LocatedError` raised anywhere below (data, model,
    checks, training, a shape's executor) becomes ``hf``'s one-line message with the line."""
    try:
        yield
    except LocatedError as exc:
        raise hf.error(exc.loc, exc.expected, exc.found, exc.choices) from None


def plan(
    hf: HypothesisFile, cache: ModelCache, device: torch.device, estimate: bool = True
) -> Plan:
    """Validate ``hf`` against its data and model and count the replicates already cached;
    with ``estimate``, time a few training steps to estimate the rest (estimate.py)."""
    with _located(hf):
        return _plan(hf, cache, device, estimate)


def _check_streaming(hf: HypothesisFile) -> None:
    """With ``population.data.stream``, every kind that reads the data must read it in batches
    (its ``streams`` capability), else the data would be held in memory behind the user's back:
    the test, its measures, effects and outcomes, and every regularizer a condition switches on
    (docs/performance.md, "Data that does not fit in memory")."""
    hyp = hf.hypothesis
    if not hyp.population.data.stream:
        return
    located = list(kinds_in(hyp.test, ("test",)))
    for condition in expand(hyp.population):
        training = condition.population.training
        for name, regularizer in zip(training.blocks(), training.regularizers(), strict=True):
            if regularizer.active:
                located.append((("population", "training", name), regularizer))
    for loc, kind in located:
        if kind.capabilities().get("streams", True):  # streams, or its slot reads no data
            continue
        slot = REGISTRIES[kind.slot]
        streaming = [tag for tag, cls in slot.items() if cls.streams]
        raise hf.error(
            loc if kind.slot == "regularizers" else (*loc, "kind"),
            f"a kind that reads streamed data in batches ({', '.join(streaming) or 'none'}), "
            "or `population.data.stream` left out",
            kind.tag(),
        )


def _plan(hf: HypothesisFile, cache: ModelCache, device: torch.device, estimate: bool) -> Plan:
    pop = hf.hypothesis.population
    _check_streaming(hf)
    data = load_dataset(pop.data)
    check_fits(pop.model, data.input_shape, data.n_classes, device)
    _validate_against_model(hf, data)
    if _validate_checkpoints(hf, data):  # nothing to train: every replicate is supplied
        return Plan(hf, data, len(pop.seeds), len(pop.seeds), 0.0)
    est = estimate_training(pop, data, cache, device, probe=estimate)
    return Plan(hf, data, est.to_train + est.cached, est.cached, est.seconds)


def _within_budget(hf: HypothesisFile, p: Plan, device: torch.device, max_hours: float) -> None:
    if p.seconds <= max_hours * 3600:
        return
    raise FalsifyError(
        f"{hf.path}: training its {p.n_replicates - p.n_cached} uncached replicates is estimated "
        f"at {format_duration(p.seconds)} on {device}, beyond the limit of {max_hours:g} h; "
        "lower the work (epochs, seeds, conditions) or raise the limit with --max-hours "
        "(falsify.run(max_hours=...))."
    )


def _validate_checkpoints(hf: HypothesisFile, data: Dataset | StreamedDataset) -> bool:
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


def _enough_included(hf: HypothesisFile, kept: list[Replicate], screening: pd.DataFrame) -> None:
    """The inclusion rule must leave 2 seeds: one model gives no confidence interval."""
    seeds = {r.seed for r in kept}
    if len(seeds) >= 2:
        return
    left_out = screening.loc[~screening["included"], "seed"].drop_duplicates().tolist()
    raise hf.error(
        ("population", "include"),
        "a rule that leaves at least 2 seeds for a confidence interval (the replicate is the "
        f"trained model); it left out seeds {left_out} of {screening['seed'].nunique()}",
        hf.hypothesis.population.include.model_dump(exclude_defaults=True),
    )


def _versions() -> dict[str, str]:
    out = {"python": platform.python_version(), "falsify": __version__}
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
    max_hours: float | None = None,
) -> Outcome:
    """Train or load the population, run the test, and return the outcome (nothing written).

    With ``max_hours``, a population whose training is estimated (:mod:`falsify.runner.estimate`)
    to take longer is refused before anything is trained.
    """
    start = time.perf_counter()
    with _located(hf):
        p = _plan(hf, cache, device, estimate=True)
        if max_hours is not None:
            _within_budget(hf, p, device, max_hours)
        pop = hf.hypothesis.population
        reps = obtain_replicates(pop, p.data, cache, device, progress, executor)
        reps = with_checkpoints(pop, reps, p.data, cache, device)
        kept, screening = screen_replicates(pop, p.data, reps)
        _enough_included(hf, kept, screening)
        threads = threads_per_job(executor.jobs) if executor is not None else 1
        evidence, table, verdict = run_shape(hf, p.data, kept, executor, threads)
    provenance = {
        "file": str(hf.path),
        "file_sha256": hf.sha256,
        "falsify_version": __version__,
        "git": git_state(hf.path),
        "overrides": list(hf.overrides),
        "device": str(device)
        + (f" ({torch.cuda.get_device_name(device)})" if device.type == "cuda" else ""),
        "torch_threads": torch.get_num_threads(),
        "executor": type(executor).__name__ if executor else "in-process",
        "jobs": executor.jobs if executor else 1,
        "seeds": list(dict.fromkeys(r.seed for r in reps)),
        "cache_hits": sum(r.cache_hit for r in reps),
        "cache_repairs": [
            (f"{r.condition} / " if r.condition else "") + f"seed {r.seed}: {r.repaired}"
            for r in reps
            if r.repaired
        ],
        "replicates": len(reps),
        "streamed": pop.data.stream,
        "excluded": len(reps) - len(kept),
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
        screening=screening,
    )
