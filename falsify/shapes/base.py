"""The protocol every test shape implements, and the one pipeline that runs any of them.

A shape is a :class:`falsify.hypothesis.kinds.ShapeKind` subclass (the ``test:`` block of a
file) that implements

- ``check(hf, model, data)``: validation that needs the real (untrained) model, raising
  :class:`falsify.errors.LocatedError`;
- ``evidence(hf, data, replicates) -> Evidence``: the per-replicate rows, pooled into
  :class:`falsify.stats.Part` s, with labels, figures (as data) and notes; or, split in two,
  ``replicate_evidence(hf, data, replicate)`` (one model's sweeps and measures, as plain data)
  and ``pooled_evidence(hf, data, replicates, results)``, so that a cluster's nodes evaluate the
  replicates and only their results come back (docs/reports.md, "Parallel training");

and declares ``figure`` (the report drawer of its main figure), ``simulator`` (the calibration
family whose simulated studies check its verdict rule, :mod:`falsify.stats.calibration`) and
``compares_conditions``. :func:`run_shape` does the rest once: it refuses a part with too few
replicates (one rule, one message), decides the verdict and returns the result as data; the
report package draws it.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, Any, Protocol

import pandas as pd
import torch

from falsify.errors import FalsifyError
from falsify.stats import Part, Verdict, decide

if TYPE_CHECKING:
    from collections.abc import Callable, Iterator, Sequence

    from falsify.hypothesis.loader import HypothesisFile

__all__ = [
    "PARTS_TABLE",
    "Evidence",
    "Figure",
    "TooFewReplicates",
    "require_replicates",
    "run_shape",
]


class _PartsTable:
    def __repr__(self) -> str:
        return "PARTS_TABLE"


# Stands in a figure's arguments for the parts table, which exists only after the verdict.
PARTS_TABLE: Any = _PartsTable()


@dataclass(frozen=True)
class Figure:
    """A figure as data: ``draw`` names a drawer of :mod:`falsify.report.drawers`, called as
    ``draw(*args, path)``; :data:`PARTS_TABLE` in ``args`` is replaced by the parts table."""

    draw: str
    args: tuple[Any, ...]


@dataclass(frozen=True)
class Evidence:
    """What a shape computes from the replicates, before the verdict.

    ``replicates``: one row per replicate × part (the per-model statistic in ``statistic``);
    ``tidy``: the finest-grained data (one row per ``tidy_grain``), written to CSV;
    ``figures``: file-name suffix -> figure.
    """

    parts: list[Part]
    replicates: pd.DataFrame
    tidy: pd.DataFrame
    tidy_grain: str
    labels: dict[str, str]
    figures: dict[str, Figure] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)


class TooFewReplicates(FalsifyError):
    """A part with fewer than 2 replicates: no confidence interval, so no verdict."""


def require_replicates(part: str, n: int, why: Sequence[str] = ()) -> None:
    """The one too-few-replicates rule: a part needs 2 replicates with a defined statistic."""
    if n < 2:
        raise TooFewReplicates(
            f"no verdict for {part}: {n} replicate(s) with a defined statistic; at least 2 are "
            "needed for a confidence interval (the replicate is the trained model)."
            + "".join(f" {w}" for w in why)
        )


def _replicate_job(hf: HypothesisFile, data: Any, replicate: Any, index: int, threads: int) -> Any:
    """A job's entry point: one replicate's share of the evidence, with its index."""
    torch.set_num_threads(threads)
    return index, hf.hypothesis.test.replicate_evidence(hf, data, replicate)


class ReplicateExecutor(Protocol):
    """What :func:`run_shape` needs of an executor (falsify.runner.executors.Executor is one;
    the runner, a layer above, owns them)."""

    remote: bool

    def map(self, fn: Callable[..., Any], args: Sequence[tuple[Any, ...]]) -> Iterator[Any]: ...

    def share(self, value: Any) -> Any: ...


def _evidence(
    hf: HypothesisFile,
    data: Any,
    replicates: list[Any],
    executor: ReplicateExecutor | None,
    threads: int,
) -> Evidence:
    """The shape's evidence; on a remote executor's nodes, replicate by replicate, when the
    shape splits its evidence that way."""
    shape = hf.hypothesis.test
    if (
        executor is None
        or not executor.remote
        or not shape.splits_evidence()
        or len(replicates) < 2
    ):
        return shape.evidence(hf, data, replicates)
    shared = executor.share(data)
    args = [(hf, shared, rep, i, threads) for i, rep in enumerate(replicates)]
    results = dict(executor.map(_replicate_job, args))
    return shape.pooled_evidence(hf, data, replicates, [results[i] for i in range(len(args))])


def run_shape(
    hf: HypothesisFile,
    data: Any,
    replicates: list[Any],
    executor: ReplicateExecutor | None = None,
    threads: int = 1,
) -> tuple[Evidence, pd.DataFrame, Verdict]:
    """The shape's evidence, its parts' table (estimate, CI, p-values, verdict) and verdict.

    With a remote ``executor`` (a Ray cluster), each replicate is evaluated as one of its jobs,
    on ``threads`` CPU threads.
    """
    try:
        evidence = _evidence(hf, data, replicates, executor, threads)
        for part in evidence.parts:
            require_replicates(part.name, part.n_replicates)
    except TooFewReplicates as exc:
        raise FalsifyError(f"{hf.path}: {exc}") from None
    table, verdict = decide(evidence.parts, hf.hypothesis.prediction)
    figures = {
        suffix: replace(fig, args=tuple(table if a is PARTS_TABLE else a for a in fig.args))
        for suffix, fig in evidence.figures.items()
    }
    return replace(evidence, figures=figures), table, verdict
