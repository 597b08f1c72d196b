"""The Python API: the same validated objects and the same run as the command line.

>>> import falsify
>>> hf = falsify.load("hypotheses/selectivity_predicts_importance.yaml", seeds=3)
>>> outcome = falsify.run(hf)
>>> outcome.verdict, outcome.parts[["part", "estimate", "ci_low", "ci_high"]]
"""

from __future__ import annotations

import tempfile
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

import yaml

from falsify.hypothesis import loader
from falsify.hypothesis.lock import DEFAULT_LOCK, preregistration
from falsify.runner.executors import make_executor

if TYPE_CHECKING:
    from falsify.runner import Outcome
    from falsify.runner.executors import Executor
    from falsify.runner.replicate import Replication

__all__ = ["DEFAULT_MAX_HOURS", "from_dict", "load", "replicate", "run"]

# Training estimated beyond this many hours is refused unless the caller raises it.
DEFAULT_MAX_HOURS = 2.0


def _overrides(overrides: Sequence[str], seeds: int | None) -> list[str]:
    return [*overrides, *([f"population.seeds={seeds}"] if seeds is not None else [])]


def load(
    path: str | Path, overrides: Sequence[str] = (), seeds: int | None = None
) -> loader.HypothesisFile:
    """Read and validate a hypothesis file (``overrides`` as ``"a.b=value"``, like ``--set``)."""
    return loader.load(path, _overrides(overrides, seeds))


def from_dict(
    data: dict[str, Any], name: str = "<dict>", overrides: Sequence[str] = ()
) -> loader.HypothesisFile:
    """Validate a hypothesis given as a Python mapping with the file's structure."""
    return loader.loads(yaml.safe_dump(data, sort_keys=False), name, overrides)


def run(
    hypothesis: loader.HypothesisFile | str | Path,
    *,
    cache: str | Path = ".falsify",
    device: str = "auto",
    jobs: int = 1,
    executor: str | Executor = "local",
    address: str | None = None,
    out: str | Path | None = None,
    lock: str | Path = DEFAULT_LOCK,
    progress: bool = False,
    mlflow: str | Path | None = None,
    max_hours: float | None = DEFAULT_MAX_HOURS,
) -> Outcome:
    """Train or load the population, run the test and return the :class:`Outcome`.

    ``outcome.verdict``, ``outcome.parts`` (one row per part: estimate, CI, p-values, effect
    size, verdict), ``outcome.replicates`` (one row per replicate × part) and ``outcome.tidy``
    (the finest-grained data) are pandas tables; in a notebook the outcome shows itself as its
    Markdown report with the figures inline. With ``out``, the report files are written
    there too, exactly as ``falsify run --out`` writes them (``<out>/<id>.md`` and beside it).
    ``executor`` is ``local`` or ``ray`` (with ``jobs`` and ``address``), or an executor made
    once by :func:`falsify.runner.executors.make_executor` and shared by several runs, as
    ``falsify run`` does for the files it is given (then closing it is the caller's part:
    ``close()`` shuts down a Ray instance it started). With ``mlflow`` (a folder, or a tracking
    URI), the run is also logged there (:mod:`falsify.report.tracking`).
    """
    # here, not at the top: load and from_dict need neither torch nor the report
    from falsify.report import first_result_at, write_outcome
    from falsify.report.notebook import ShownOutcome
    from falsify.report.tracking import log_run, require_mlflow
    from falsify.runner import ModelCache, resolve_device, run_hypothesis

    if mlflow is not None:
        require_mlflow()  # before training, not after
    hf = hypothesis if isinstance(hypothesis, loader.HypothesisFile) else load(hypothesis)
    pool = make_executor(executor, jobs, address) if isinstance(executor, str) else executor
    try:
        outcome = run_hypothesis(
            hf, ModelCache(cache), resolve_device(device), progress, pool, max_hours
        )
    finally:
        if pool is not None and isinstance(executor, str):  # made here: released here
            pool.close()
    if out is not None:
        out = Path(out)
        outcome = replace(
            outcome,
            preregistration=preregistration(hf, Path(lock), first_result_at(out, hf.hypothesis.id)),
        )
        write_outcome(outcome, out)
    if mlflow is not None:
        if out is not None:
            log_run(outcome, out, mlflow)
        else:  # the artifacts are the report files, so write them somewhere first
            with tempfile.TemporaryDirectory(prefix="falsify-mlflow-") as tmp:
                write_outcome(outcome, Path(tmp))
                log_run(outcome, Path(tmp), mlflow)
    return ShownOutcome.of(outcome)


def replicate(
    hypothesis: loader.HypothesisFile | str | Path,
    *,
    seed_offset: int | None = None,
    cache: str | Path = ".falsify",
    device: str = "auto",
    jobs: int = 1,
    executor: str | Executor = "local",
    address: str | None = None,
    out: str | Path | None = None,
    lock: str | Path = DEFAULT_LOCK,
    progress: bool = False,
    max_hours: float | None = DEFAULT_MAX_HOURS,
) -> Replication:
    """Run the hypothesis, then rerun it on fresh seeds, and return both side by side.

    The replication is the same file with every seed shifted by ``seed_offset`` (by default
    the smallest multiple of 1000 above every seed, so the two sets never overlap;
    :mod:`falsify.runner.replicate`), run exactly as :func:`run` runs the file. With ``out``,
    the original's report is written there as :func:`run` writes it, the replication's into
    ``<out>/replication/``, and the comparison as ``<out>/<id>.replication.md`` with
    ``<out>/replications.md`` (docs/reports.md, "Replication reports").
    ``replication.agreement`` and ``replication.parts`` say whether it agrees.
    """
    from falsify.report.replication import REPLICATION_DIR, write_replication
    from falsify.runner.replicate import compare, default_offset, replication_file

    hf = hypothesis if isinstance(hypothesis, loader.HypothesisFile) else load(hypothesis)
    pool = make_executor(executor, jobs, address) if isinstance(executor, str) else executor
    offset = default_offset(hf.hypothesis.population.seeds) if seed_offset is None else seed_offset
    again = replication_file(hf, offset)  # refuses a bad offset before anything trains

    def go(h: loader.HypothesisFile, where: Path | None) -> Outcome:
        return run(
            h,
            cache=cache,
            device=device,
            executor=pool,
            out=where,
            lock=lock,
            progress=progress,
            max_hours=max_hours,
        )

    try:
        original = go(hf, None if out is None else Path(out))
        rerun = go(again, None if out is None else Path(out) / REPLICATION_DIR)
    finally:
        if pool is not None and isinstance(executor, str):  # made here: released here
            pool.close()
    result = compare(original, rerun, offset)
    if out is not None:
        write_replication(result, Path(out))
    return result
