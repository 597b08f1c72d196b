"""Shared helpers of the benchmark scripts: timing, peak memory, the digits inputs."""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import torch

from falsify.data import load_dataset
from falsify.data.digits import DigitsData

__all__ = ["PeakMemory", "Timing", "all_digits", "describe_machine", "timed"]

T = TypeVar("T")

_STATUS = Path("/proc/self/status")
_CLEAR_REFS = Path("/proc/self/clear_refs")


@dataclass
class Timing:
    """Wall-clock and CPU seconds (all threads of the process) of repeated runs."""

    wall: list[float] = field(default_factory=list)
    cpu: list[float] = field(default_factory=list)

    @property
    def median(self) -> float:
        return statistics.median(self.wall)

    @property
    def median_cpu(self) -> float:
        return statistics.median(self.cpu)

    def spread(self) -> str:
        """``median wall (min–max, n runs), median CPU``."""
        w = self.wall
        return (
            f"{self.median:8.2f} s (min {min(w):.2f}, max {max(w):.2f}, {len(w)} runs) "
            f"cpu {self.median_cpu:.2f} s"
        )


def timed(fn: Callable[[], T], repeats: int) -> tuple[Timing, T]:
    """Times of ``repeats`` calls of ``fn`` and the last call's result.

    On a machine shared with other work, wall time is inflated by waiting for a core; CPU time
    (summed over the process's threads) is much less so, and is printed next to it.
    """
    timing = Timing()
    out: Any = None
    for _ in range(repeats):
        start, start_cpu = time.perf_counter(), time.process_time()
        out = fn()
        timing.wall.append(time.perf_counter() - start)
        timing.cpu.append(time.process_time() - start_cpu)
    return timing, out


def _status_kib(field: str) -> int:
    for line in _STATUS.read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise KeyError(field)


class PeakMemory:
    """Peak memory a block adds: resident set size on the CPU (Linux), allocator peak on CUDA.

    On the CPU, the kernel's high-water mark of the resident set (``VmHWM``) is reset through
    ``/proc/self/clear_refs`` before the block, and the growth over the resident set at the start
    is reported. It counts everything the process touches, so it is an upper bound on what the
    block's tensors need.
    """

    def __init__(self, device: torch.device) -> None:
        self.device = device
        self.bytes = 0

    @contextmanager
    def measure(self) -> Iterator[PeakMemory]:
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
            torch.cuda.reset_peak_memory_stats(self.device)
            start = torch.cuda.memory_allocated(self.device)
            yield self
            torch.cuda.synchronize(self.device)
            self.bytes = torch.cuda.max_memory_allocated(self.device) - start
            return
        _CLEAR_REFS.write_text("5")
        start = _status_kib("VmRSS")
        yield self
        self.bytes = (_status_kib("VmHWM") - start) * 1024


def all_digits(device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    """All 1,797 digits (train and test split together), ``[1797, 1, 8, 8]`` and ``[1797]``."""
    data = load_dataset(DigitsData(kind="digits"))
    x = torch.cat([data.x_train, data.x_test]).to(device)
    y = torch.cat([data.y_train, data.y_test]).to(device)
    return x, y


def describe_machine(device: torch.device) -> str:
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu"
    return f"torch {torch.__version__}, {name}, {torch.get_num_threads()} threads"
