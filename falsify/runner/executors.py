"""Where independent replicate jobs run: this process, a local process pool, or a Ray cluster.

A local pool's jobs share this machine's disk, so they communicate through the model cache: a
job trains one replicate and stores it (atomically, under the entry's lock), and the caller then
loads every replicate from the cache. A Ray cluster's nodes need not share a disk
(:attr:`Executor.remote`): a job there returns its trained model (the safetensors bytes and the
entry's metadata) through Ray's object store and the caller writes it into its own cache, so the
cache stays the single source of truth, with its SHA-256 check and its locks, and a rerun reuses
it; each replicate's evaluation (the shape's per-replicate sweeps and measures) also runs as a
job there, and only its results come back (docs/reports.md, "Parallel training"). Either way a
job's result is the same wherever it ran, and a run killed half-way keeps every replicate it
finished.
"""

from __future__ import annotations

import multiprocessing
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ProcessPoolExecutor, as_completed
from typing import Any, Protocol

from falsify.errors import FalsifyError

__all__ = ["EXECUTORS", "Executor", "LocalPool", "RayCluster", "make_executor"]

EXECUTORS = ("local", "ray")

# How to get Ray, in one place: the distribution's name may change (ray, ray[default], ...).
RAY_INSTALL_HINT = "pip install 'falsify-interp[ray]'"


class Executor(Protocol):
    jobs: int
    # Whether jobs may run on machines that do not see this one's disk: then a job returns what
    # it made instead of writing it to the cache, and replicates are evaluated as jobs too.
    remote: bool

    def map(self, fn: Callable[..., Any], args: Sequence[tuple[Any, ...]]) -> Iterator[Any]:
        """Run ``fn(*a)`` for every ``a``; yield results as they finish (in any order)."""
        ...

    def share(self, value: Any) -> Any:
        """``value`` as an argument of many jobs (sent to the workers once where it helps)."""
        ...

    def close(self) -> None:
        """Release what the executor started (called once, after its last run)."""
        ...


def threads_per_job(jobs: int) -> int:
    """Split this machine's CPU threads between concurrent jobs (at least one each)."""
    import torch  # here, not at the top: the CLI's parser reads EXECUTORS without loading torch

    return max(1, torch.get_num_threads() // jobs)


class LocalPool:
    """A process pool on this machine (spawned processes: safe with torch and CUDA)."""

    remote = False

    def __init__(self, jobs: int) -> None:
        self.jobs = jobs

    def map(self, fn: Callable[..., Any], args: Sequence[tuple[Any, ...]]) -> Iterator[Any]:
        ctx = multiprocessing.get_context("spawn")
        with ProcessPoolExecutor(max_workers=self.jobs, mp_context=ctx) as pool:
            futures = [pool.submit(fn, *a) for a in args]
            for f in as_completed(futures):
                yield f.result()

    def share(self, value: Any) -> Any:
        return value

    def close(self) -> None:
        """Nothing to release: each ``map`` owns its pool."""


class RayCluster:
    """Jobs as Ray tasks: a Ray instance started here, or an existing cluster at ``address``.

    Tasks are spread over the nodes (Ray's ``SPREAD`` strategy), one CPU each. :meth:`close`
    shuts down an instance this object started and disconnects from a cluster it joined, which
    keeps running; a Ray connection this process already had is left as it is.
    """

    remote = True

    def __init__(self, jobs: int, address: str | None) -> None:
        try:
            import ray
        except ImportError:
            raise FalsifyError(
                "The '--executor' ray needs the ray package, which is not installed: install it "
                f"with `{RAY_INSTALL_HINT}`."
            ) from None
        self.jobs = jobs
        self._ray = ray
        self._owned = not ray.is_initialized()
        self._shared: tuple[Any, Any] | None = None  # (value, its object ref)
        if self._owned:
            # "local" starts a new instance even where a cluster runs on this machine, so
            # close() never shuts down a cluster it was not given.
            ray.init(
                address=address or "local",
                num_cpus=None if address else jobs,
                include_dashboard=False,
                log_to_driver=False,
            )

    def map(self, fn: Callable[..., Any], args: Sequence[tuple[Any, ...]]) -> Iterator[Any]:
        remote = self._ray.remote(num_cpus=1, scheduling_strategy="SPREAD")(fn)
        pending = [remote.remote(*a) for a in args]
        while pending:
            done, pending = self._ray.wait(pending, num_returns=1)
            try:
                yield self._ray.get(done[0])
            except self._ray.exceptions.RayTaskError as exc:
                if isinstance(exc.cause, FalsifyError):  # bad input: its own message, not Ray's
                    raise exc.cause from None
                raise

    def share(self, value: Any) -> Any:
        """An object ref Ray resolves in every task that takes it (one copy per node); only
        the latest value is kept (a run's training and evaluation share one dataset)."""
        if self._shared is None or self._shared[0] is not value:
            self._shared = (value, self._ray.put(value))
        return self._shared[1]

    def close(self) -> None:
        self._shared = None
        if self._owned and self._ray.is_initialized():
            self._ray.shutdown()
        self._owned = False


def make_executor(kind: str, jobs: int, address: str | None = None) -> Executor | None:
    """None means: run every job in this process, one after another."""
    if jobs < 1:
        raise FalsifyError(f"The '--jobs' must be at least 1. Got {jobs} instead.")
    if kind not in EXECUTORS:
        raise FalsifyError(
            f"The '--executor' must be one of {list(EXECUTORS)}. Got {kind!r} instead."
        )
    if kind == "ray":
        return RayCluster(jobs, address)
    if address:
        raise FalsifyError("The '--address' only applies to '--executor ray'.")
    return LocalPool(jobs) if jobs > 1 else None
