"""Running hypothesis files: validate against the real model, obtain replicates, test, report."""

from __future__ import annotations

import platform
import time
from dataclasses import dataclass
from datetime import datetime, timezone
from importlib import metadata

import torch

from falsify._imports import UserCodeError
from falsify.data import Dataset, load_dataset
from falsify.hypothesis.loader import HypothesisFile
from falsify.interventions.hooks import layer_names
from falsify.models import build_model
from falsify.models.checkpoint import checkpoint_paths, load_checkpoint
from falsify.runner.cache import ModelCache, replicate_key
from falsify.runner.outcome import Outcome
from falsify.runner.replicates import obtain_replicates, recipe_of
from falsify.runner.shapes import SHAPES

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


def _validate_against_model(hf: HypothesisFile, data: Dataset) -> None:
    """Checks that need the real model: layer names exist; SESOI fits the effect's scale."""
    hyp = hf.hypothesis
    with torch.random.fork_rng(devices=[]):
        model = build_model(hyp.population.model, data.input_shape, data.n_classes)
    names = layer_names(model)
    for i, layer in enumerate(hyp.test.layers):
        if layer not in names:
            raise hf.error(("test", "layers", i), f"one of {names}", layer, names)
    if hyp.test.kind == "association" and hyp.prediction.sesoi >= 1:
        raise hf.error(
            ("prediction", "sesoi"),
            "below 1 (an association test's effect is a correlation r)",
            hyp.prediction.sesoi,
        )


def plan(hf: HypothesisFile, cache: ModelCache, device: torch.device) -> Plan:
    """Validate ``hf`` against its data and model and count the replicates already cached."""
    pop = hf.hypothesis.population
    try:
        data = load_dataset(pop.data)
        _validate_against_model(hf, data)
        if _validate_checkpoints(hf, data):  # nothing to train: every replicate is supplied
            return Plan(hf, data, len(pop.seeds), len(pop.seeds))
        recipe = recipe_of(pop)
    except UserCodeError as exc:
        raise hf.error(exc.loc, exc.expected, exc.found, exc.choices) from None
    cached = sum(cache.contains(replicate_key(recipe, s, device)) for s in pop.seeds)
    return Plan(hf, data, len(pop.seeds), cached)


def _validate_checkpoints(hf: HypothesisFile, data: Dataset) -> bool:
    """Every seed's checkpoint exists and fits the model; False when there are none."""
    pop = hf.hypothesis.population
    paths = checkpoint_paths(pop.model, pop.seeds)
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
    hf: HypothesisFile, cache: ModelCache, device: torch.device, progress: bool = True
) -> Outcome:
    """Train or load the population, run the test, and return the outcome (nothing written)."""
    start = time.perf_counter()
    p = plan(hf, cache, device)
    reps = obtain_replicates(hf.hypothesis.population, p.data, cache, device, progress)
    outcome = SHAPES[hf.hypothesis.test.kind](hf, p.data, reps)
    outcome.provenance = {
        "file": str(hf.path),
        "file_sha256": hf.sha256,
        "overrides": list(hf.overrides),
        "device": str(device)
        + (f" ({torch.cuda.get_device_name(device)})" if device.type == "cuda" else ""),
        "torch_threads": torch.get_num_threads(),
        "seeds": [r.seed for r in reps],
        "cache_hits": sum(r.cache_hit for r in reps),
        "replicates": len(reps),
        "wall_seconds": time.perf_counter() - start,
        "platform": platform.platform(),
        "versions": _versions(),
        "cache_keys": {r.seed: r.key[:16] for r in reps},
        "finished_at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
    }
    return outcome
