"""Obtaining a population's trained models: from the cache, or trained and then cached."""

from __future__ import annotations

import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass, field, replace
from typing import Any

import pandas as pd
import torch
from scipy.stats import binomtest
from torch import nn
from tqdm import tqdm

from falsify.data import Dataset, load_dataset
from falsify.data.base import IGNORE
from falsify.data.stream import StreamedDataset, inputs_of
from falsify.errors import FalsifyError
from falsify.hypothesis.conditions import Condition, expand
from falsify.hypothesis.schema import Population, TrainingSpec
from falsify.models import build_model
from falsify.models.checkpoint import checkpoint_paths, file_sha256, load_checkpoint
from falsify.models.ensemble import (
    NotBatchable,
    ensemble_speedup,
    supports_ensemble,
    train_ensemble,
)
from falsify.models.training import TrainResult, evaluate, train_replicate
from falsify.runner.cache import ModelCache, checkpoint_key, replicate_key, weights_blob
from falsify.runner.executors import Executor, LocalPool, threads_per_job
from falsify.runner.identity import population_identity

__all__ = [
    "CHANCE_ALPHA",
    "Replicate",
    "chance_level",
    "checkpointed_replicates",
    "obtain_replicates",
    "recipe_of",
    "screen_replicates",
    "train_seeds",
    "train_to_bytes",
    "train_to_cache",
]


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
    repaired: str = ""  # why a damaged cache entry was retrained; "" when it was not
    # epochs done -> this model's checkpoint then (training.checkpoint_epochs; runner.checkpoints)
    checkpoints: dict[int, Replicate] = field(default_factory=dict)

    def at_epoch(self, epoch: int | None) -> Replicate:
        """This replicate as it was after ``epoch`` epochs (a checkpoint); itself for None."""
        if epoch is None:
            return self
        if epoch not in self.checkpoints:
            raise FalsifyError(
                f"The model of seed {self.seed} has no checkpoint at epoch {epoch} (it keeps "
                f"{sorted(self.checkpoints)}; see 'population.training.checkpoint_epochs')."
            )
        return self.checkpoints[epoch]


def recipe_of(population: Population) -> dict[str, Any]:
    """Everything but the seeds that determines a replicate's weights, as plain JSON.

    The inclusion rule (``include``) decides which replicates are analysed, not their weights,
    so it is not part of the recipe. For a population with conditions, call it on each
    condition's resolved population
    (:func:`falsify.hypothesis.conditions.expand`). A field the recipe ignores is spelled at its
    default, so it does not split the cache. Each regularizer block is spelled as its
    kind's ``cache_recipe()`` (the flat names of before the blocks; a window only while one is
    set), so cache keys stay as they were. ``training.checkpoint_epochs`` is left out: keeping
    checkpoints leaves the trained weights as they are.
    """
    recipe = population.model_dump(mode="json", exclude={"seeds", "conditions", "include"})
    # Streamed data reads the same examples: the weights do not depend on it.
    recipe["data"].pop("stream", None)
    training = population.training
    for name in (*training.blocks(), *TrainingSpec.NOT_IN_RECIPE):
        del recipe["training"][name]
    for name, default in TrainingSpec.LATER_FIELDS.items():
        if recipe["training"][name] == default:
            del recipe["training"][name]
    for regularizer in training.regularizers():
        recipe["training"] |= regularizer.cache_recipe()
    if training.optimizer != "sgd":
        # Adam ignores momentum: spell it at its default so the key does not depend on it (and
        # keys of recipes that leave it alone stay as they were).
        recipe["training"]["momentum"] = TrainingSpec.model_fields["momentum"].default
    identity = population_identity(population)
    if identity:  # only for user code and data folders, so built-in keys are unchanged
        recipe["identity"] = identity
    return recipe


def _save(
    population: Population,
    device: torch.device,
    cache: ModelCache,
    seed: int,
    trained: TrainResult,
    seconds: float,
    trainer: str,
    executor: str = "in-process",
) -> None:
    for entry in _entries(population, device, seed, trained, seconds, trainer, executor):
        cache.save(*entry)


def _entries(
    population: Population,
    device: torch.device,
    seed: int,
    trained: TrainResult,
    seconds: float,
    trainer: str,
    executor: str,
) -> list[tuple[str, nn.Module, dict[str, Any]]]:
    """A trained replicate's cache entries, each a key, model and metadata: its checkpoints
    first (a published final entry then implies its checkpoints are cached too), then itself."""
    recipe = recipe_of(population)
    info = {
        "recipe": recipe,
        "seed": seed,
        "device": device.type,
        "torch": torch.__version__,
        "test_accuracy": trained.test_accuracy,
        "train_loss": trained.train_loss,
        "metrics": trained.metrics,
        "train_seconds": seconds,
        "trainer": trainer,
        "executor": executor,
    }
    out = []
    for epoch, kept in trained.checkpoints.items():
        measured = {
            "test_accuracy": kept.test_accuracy,
            "train_loss": kept.train_loss,
            "metrics": kept.metrics,
            "checkpoint_epoch": epoch,
        }
        out.append((checkpoint_key(recipe, epoch, seed, device), kept.model, info | measured))
    out.append((replicate_key(recipe, seed, device), trained.model, info))
    return out


def train_to_cache(
    population_json: dict[str, Any],
    seed: int,
    device: str,
    cache_root: str,
    threads: int,
    executor: str = "job",
) -> str:
    """A job's entry point (plain, picklable arguments): train one replicate into the cache.

    ``population_json`` is one condition's resolved population (no conditions of its own). The
    job holds the entry's lock and trains only if no other process has published it meanwhile;
    it returns the key it trained, or "" when it found the entry published.
    """
    torch.set_num_threads(threads)
    population = Population.model_validate(population_json)
    dev = torch.device(device)
    cache = ModelCache(cache_root)
    key = replicate_key(recipe_of(population), seed, dev)
    with cache.lock([key]):
        if cache.verified(key):
            return ""
        for result in train_seeds(population, load_dataset(population.data), [seed], dev, False):
            _save(population, dev, cache, *result, executor=executor)
    return key


def train_to_bytes(
    population_json: dict[str, Any],
    seed: int,
    device: str,
    data: Dataset | StreamedDataset,
    threads: int,
    executor: str,
) -> list[tuple[str, bytes, dict[str, Any]]]:
    """A job's entry point on a node that may not see the caller's disk: train one replicate
    and return its cache entries (key, safetensors bytes, metadata; its checkpoints first, then
    itself) for the caller to store."""
    torch.set_num_threads(threads)
    population = Population.model_validate(population_json)
    dev = torch.device(device)
    ((_, trained, seconds, trainer),) = train_seeds(population, data, [seed], dev, False)
    entries = _entries(population, dev, seed, trained, seconds, trainer, executor)
    return [(key, weights_blob(model), info) for key, model, info in entries]


# Measured (docs/reports.md, "Parallel training"): 4 seeds of a 16-unit MLP on digits took
# 3.7 s in-process and 24.0 s with `--jobs 2`, which pays a process start per job.
IN_PROCESS_NOTE = (
    "note: these models are trained faster together in this process than as separate jobs; "
    "'--jobs' is ignored for them"
)


def _ensemble_is_faster(
    executor: Executor, jobs: list[tuple[Condition, int]], device: torch.device
) -> bool:
    """Whether a local pool's jobs are better trained here, as one ensemble per condition.

    A spawned job pays for starting Python, importing torch and loading the data, while the
    ensemble trainer trains a condition's seeds in one batched pass; it is preferred while its
    speed-up over sequential training (:func:`falsify.models.ensemble.ensemble_speedup`) is at
    least the pool's number of processes.
    """
    return (
        isinstance(executor, LocalPool)
        and device.type == "cpu"
        and len(jobs) > 1
        and all(supports_ensemble(condition.population) for condition, _ in jobs)
        and executor.jobs <= min(ensemble_speedup(condition.population) for condition, _ in jobs)
    )


def _job_devices(device: torch.device, n: int) -> list[str]:
    """Share the visible GPUs round-robin between jobs; CPU jobs all use the CPU."""
    if device.type != "cuda" or device.index is not None:
        return [str(device)] * n
    gpus = max(1, torch.cuda.device_count())
    return [f"cuda:{i % gpus}" for i in range(n)]


def obtain_replicates(
    population: Population,
    data: Dataset | StreamedDataset,
    cache: ModelCache,
    device: torch.device,
    progress: bool = True,
    executor: Executor | None = None,
) -> list[Replicate]:
    """Every replicate of every condition (condition-major, seeds in file order).

    Replicates come from the cache, or are trained and then cached. With an ``executor``, the
    missing replicates are first trained as independent jobs that write to the cache; they are
    then loaded like any cached replicate. A population with checkpoints is loaded from them.
    """
    if getattr(population.model, "checkpoint", None) is not None:
        return checkpointed_replicates(population, data, device)
    jobs = [(c, seed) for c in expand(population) for seed in population.seeds]
    keys = [replicate_key(recipe_of(c.population), seed, device) for c, seed in jobs]
    found: dict[int, Replicate] = {}
    problems: dict[int, str] = {}
    for i in range(len(jobs)):
        rep, problems[i] = _load(jobs[i], keys[i], data, cache, device)
        if rep is not None:
            found[i] = rep
    missing = [i for i in range(len(jobs)) if i not in found]
    trained: set[str] = set()  # the keys this process trained (the others were published)
    if executor is not None and _ensemble_is_faster(executor, [jobs[i] for i in missing], device):
        if progress:
            tqdm.write(IN_PROCESS_NOTE, file=sys.stderr)
        executor = None
    if executor is not None and len(missing) > 1:
        todo = [jobs[i] for i in missing]
        if executor.remote:
            wanted = [keys[i] for i in missing]
            trained = _train_remote(executor, todo, wanted, data, cache, device, progress)
        else:
            trained = _train_jobs(executor, todo, cache, device, progress)
    else:
        # In this process: each condition's missing seeds together (one ensemble where the
        # recipe allows it, bit-identical to training them one by one), under their locks; a
        # seed another process published while this one waited is loaded, not trained.
        by_condition: dict[int, list[int]] = {}
        for i in missing:
            by_condition.setdefault(jobs[i][0].index, []).append(i)
        for rows in by_condition.values():
            pop = jobs[rows[0]][0].population
            with cache.lock(keys[i] for i in rows):
                todo = [i for i in rows if not cache.verified(keys[i])]
                trained |= {keys[i] for i in todo}
                for result in train_seeds(pop, data, [jobs[i][1] for i in todo], device, progress):
                    _save(pop, device, cache, *result)
    for i in missing:
        rep, _ = _load(jobs[i], keys[i], data, cache, device, hit=keys[i] not in trained)
        if rep is None:
            raise FalsifyError(
                f"The model of seed {jobs[i][1]} was trained but is not readable in the cache "
                f"folder {cache.root}: it must be writable and not full."
            )
        found[i] = replace(rep, repaired=problems[i])
    return [found[i] for i in range(len(jobs))]


def _load(
    job: tuple[Condition, int],
    key: str,
    data: Dataset | StreamedDataset,
    cache: ModelCache,
    device: torch.device,
    hit: bool = True,
) -> tuple[Replicate | None, str]:
    """The cached replicate, or None and why a present entry cannot be used ("" if absent)."""
    condition, seed = job
    with torch.random.fork_rng(devices=[]):
        model = build_model(condition.population.model, data.input_shape, data.n_classes)
    info, problem = cache.read(key, model.to(device))
    if info is None:
        return None, problem
    model.eval()
    rep = Replicate(
        seed,
        model,
        key,
        hit,
        info["test_accuracy"],
        info["train_loss"],
        condition.name,
        info.get("metrics", {}),
    )
    return rep, ""


def _train_jobs(
    executor: Executor,
    jobs: list[tuple[Condition, int]],
    cache: ModelCache,
    device: torch.device,
    progress: bool,
) -> set[str]:
    """Train ``jobs`` as independent tasks of ``executor``, each writing to the cache; return the
    keys they trained."""
    threads = threads_per_job(executor.jobs)
    name = f"{type(executor).__name__} ({executor.jobs} jobs)"
    args = [
        (condition.population.model_dump(mode="json"), seed, dev, str(cache.root), threads, name)
        for (condition, seed), dev in zip(jobs, _job_devices(device, len(jobs)), strict=True)
    ]
    done = executor.map(train_to_cache, args)
    bar = tqdm(
        done, total=len(args), desc="training", unit="model", disable=not progress, leave=False
    )
    return {key for key in bar if key}


def _train_remote(
    executor: Executor,
    jobs: list[tuple[Condition, int]],
    keys: list[str],
    data: Dataset | StreamedDataset,
    cache: ModelCache,
    device: torch.device,
    progress: bool,
) -> set[str]:
    """Train ``jobs`` on ``executor``'s nodes, which need not see the cache folder: each job
    returns its entry through the executor, and this process stores it (under its lock, unless
    another process published it meanwhile). Returns the keys stored here."""
    threads = threads_per_job(executor.jobs)
    name = f"{type(executor).__name__} ({executor.jobs} jobs)"
    shared = executor.share(data)
    args = [
        (condition.population.model_dump(mode="json"), seed, dev, shared, threads, name)
        for (condition, seed), dev in zip(jobs, _job_devices(device, len(jobs)), strict=True)
    ]
    stored: set[str] = set()
    done = executor.map(train_to_bytes, args)
    bar = tqdm(
        done, total=len(args), desc="training", unit="model", disable=not progress, leave=False
    )
    for entries in bar:
        key, _, info = entries[-1]  # the replicate itself; checkpoints come before it
        if key not in keys:
            raise FalsifyError(
                f"A {name} job trained seed {info['seed']} with torch {info['torch']} under a "
                f"cache key this machine (torch {torch.__version__}) does not expect: every node "
                "needs the same versions of torch and falsify."
            )
        with cache.lock([key]):
            if not cache.verified(key):
                for entry in entries:
                    cache.store(*entry)
                stored.add(key)
    return stored


def checkpointed_replicates(
    population: Population, data: Dataset | StreamedDataset, device: torch.device
) -> list[Replicate]:
    """The population's models from the user's checkpoints, evaluated as they are.

    Nothing is trained or cached; the key is the checkpoint file's SHA-256, and the training
    loss is unknown (NaN). A control (``training.control``) needs training, so it is refused.
    """
    controls = {c.population.training.control for c in expand(population)} - {"none"}
    if controls:
        raise FalsifyError(
            "The 'population.training.control' of a model loaded from checkpoints must be "
            f"'none': a control is made by falsify's own training. Got {sorted(controls)[0]!r} "
            "instead."
        )
    out: list[Replicate] = []
    for seed, path in checkpoint_paths(population.model, population.seeds).items():
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            model = build_model(population.model, data.input_shape, data.n_classes)
        model = load_checkpoint(model, path).to(device)
        acc = evaluate(model, inputs_of(data, "test", device), data.y_test.to(device))
        out.append(Replicate(seed, model, file_sha256(path), False, acc, float("nan")))
    return out


def train_seeds(
    population: Population,
    data: Dataset | StreamedDataset,
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


# The level of the chance screen: a flag for the reader, not the claim's test, so it is one
# fixed level whatever the file's α (docs/reports.md, "Replicates at chance level").
CHANCE_ALPHA = 0.05


def chance_level(data: Dataset | StreamedDataset) -> tuple[float, int]:
    """``(rate, n)``: the majority-class rate of the scored test labels, and their number.

    The majority rate is at least 1 / classes, so a model that always answers the most
    frequent class is at chance however unbalanced the test set is.
    """
    y = data.y_test[data.y_test != IGNORE]  # [scored labels]
    counts = torch.bincount(y, minlength=data.n_classes)
    return float(counts.max()) / len(y), len(y)


def screen_replicates(
    population: Population, data: Dataset | StreamedDataset, replicates: list[Replicate]
) -> tuple[list[Replicate], pd.DataFrame]:
    """The replicates the inclusion rule keeps, and one row per replicate saying why.

    Every replicate's test accuracy is tested against chance (:func:`chance_level`) by a
    one-sided exact binomial test (``scipy.stats.binomtest``; the number correct is the
    accuracy times the scored labels, exact for one scored position per example) and flagged
    ``at_chance`` when p ≥ :data:`CHANCE_ALPHA`, whether or not a rule is set. The rule
    ``population.include`` (:class:`falsify.hypothesis.schema.Inclusion`) leaves a replicate out
    below ``min_test_accuracy``, or at chance with ``above_chance``; in a grid a seed left out
    in one condition leaves every condition, because comparisons pair models by seed
    (docs/file-format.md, "Replicates that did not learn").
    """
    rate, n = chance_level(data)
    rule = population.include
    rows = []
    for rep in replicates:
        p = binomtest(round(rep.test_accuracy * n), n, rate, alternative="greater").pvalue
        reasons = []
        if rule.min_test_accuracy is not None and rep.test_accuracy < rule.min_test_accuracy:
            reasons.append(
                f"test accuracy {rep.test_accuracy:.3f} < min_test_accuracy "
                f"{rule.min_test_accuracy:g}"
            )
        if rule.above_chance and p >= CHANCE_ALPHA:
            reasons.append(f"not above chance (binomial p = {p:.3g})")
        rows.append(
            {
                "condition": rep.condition,
                "seed": rep.seed,
                "test_accuracy": rep.test_accuracy,
                "chance": rate,
                "p_above_chance": p,
                "at_chance": bool(p >= CHANCE_ALPHA),
                "included": not reasons,
                "reason": "; ".join(reasons),
            }
        )
    table = pd.DataFrame(rows)
    if population.conditions:
        failed = table[~table["included"]].groupby("seed")["condition"].first()
        paired = table["included"] & table["seed"].isin(failed.index)
        table.loc[paired, "reason"] = [
            f"paired: seed {seed} is left out in {failed[seed]}" for seed in table["seed"][paired]
        ]
        table.loc[paired, "included"] = False
    kept = [rep for rep, ok in zip(replicates, table["included"], strict=True) if ok]
    return kept, table
