"""Whether a model's parameters can be held for training, decided before any is allocated.

The model is built on PyTorch's ``meta`` device, where a parameter has a shape but no storage,
so a width of ``100000000000`` costs nothing to count. Training holds each parameter four
times in float32: the weights, their gradients and Adam's two moment estimates.
"""

from __future__ import annotations

import os

import torch

from falsify.errors import LocatedError
from falsify.hypothesis.kinds import ArchitectureKind

__all__ = ["available_bytes", "check_fits", "parameter_count"]

_COPIES = 4  # weights, gradients, and Adam's first and second moments
_BYTES = 4  # float32


def parameter_count(spec: ArchitectureKind, input_shape: tuple[int, ...], n_classes: int) -> int:
    """How many parameters ``spec`` builds, counted on the ``meta`` device (no storage)."""
    with torch.device("meta"):
        model = spec.build(input_shape, n_classes)
    return sum(p.numel() for p in model.parameters())


def available_bytes(device: torch.device) -> int:
    """The memory of ``device``: a GPU's total memory, or this machine's physical memory."""
    if device.type == "cuda":
        return torch.cuda.get_device_properties(device).total_memory
    return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")


def _largest_field(spec: ArchitectureKind) -> str | None:
    """The spec's field holding its largest integer (the width that made the model too big)."""
    best, name = 0, None
    for field in type(spec).model_fields:
        value = getattr(spec, field)
        ints = [v for v in (value if isinstance(value, tuple) else (value,)) if type(v) is int]
        if ints and max(ints) > best:
            best, name = max(ints), field
    return name


def check_fits(
    spec: ArchitectureKind, input_shape: tuple[int, ...], n_classes: int, device: torch.device
) -> None:
    """Refuse, as a field error, a model whose training state cannot fit in ``device``'s memory.

    A model that cannot be built on the ``meta`` device (e.g. a user factory that loads
    weights) is not checked here; building it for real then reports what goes wrong.
    """
    try:
        n = parameter_count(spec, input_shape, n_classes)
    except Exception:
        return
    need, have = n * _COPIES * _BYTES, available_bytes(device)
    if need <= have:
        return
    field = _largest_field(spec)
    loc = ("population", "model", *((field,) if field else ()))
    found = getattr(spec, field) if field else spec.kind
    raise LocatedError(
        loc,
        f"small enough to train in memory ({n:.3g} parameters need {need / 2**30:.3g} GiB for "
        f"weights, gradients and optimizer state; {device.type} memory is {have / 2**30:.3g} GiB)",
        found,
    )
