"""Where independent replicate jobs run: this process, a local process pool, or a Ray cluster.

Jobs communicate only through the model cache: a job trains one replicate and stores it
(atomically), and the caller then loads every replicate from the cache. So a job's result is
the same wherever it ran, a run killed half-way keeps every finished replicate, and a rerun on
any machine that sees the same cache folder reuses them.
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

    def map(self, fn: Callable[..., Any], args: Sequence[tuple[Any, ...]]) -> Iterator[Any]:
        """Run ``fn(*a)`` for every ``a``; yield results as they finish (in any order)."""
        ...


def threads_per_job(jobs: int) -> int:
    """Split this machine's CPU threads between concurrent jobs (at least one each)."""
    import torch  # here, not at the top: the CLI's parser reads EXECUTORS without loading torch

    return max(1, torch.get_num_threads() // jobs)


class LocalPool:
    """A process pool on this machine (spawned processes: safe with torch and CUDA)."""

    def __init__(self, jobs: int) -> None:
        self.jobs = jobs

    def map(self, fn: Callable[..., Any], args: Sequence[tuple[Any, ...]]) -> Iterator[Any]:
        ctx = multiprocessing.get_context("spawn")
        with ProcessPoolExecutor(max_workers=self.jobs, mp_context=ctx) as pool:
            futures = [pool.submit(fn, *a) for a in args]
            for f in as_completed(futures):
                yield f.result()


class RayCluster:
    """Jobs as Ray tasks: a local Ray instance, or an existing cluster at ``address``."""

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
        if not ray.is_initialized():
            if address:
                ray.init(address=address, include_dashboard=False, log_to_driver=False)
            else:
                ray.init(num_cpus=jobs, include_dashboard=False, log_to_driver=False)

    def map(self, fn: Callable[..., Any], args: Sequence[tuple[Any, ...]]) -> Iterator[Any]:
        remote = self._ray.remote(num_cpus=1)(fn)
        pending = [remote.remote(*a) for a in args]
        while pending:
            done, pending = self._ray.wait(pending, num_returns=1)
            yield self._ray.get(done[0])


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
