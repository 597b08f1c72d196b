"""Scoped forward hooks: every read or change of a layer goes through these context managers."""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from typing import Any

import torch
from torch import nn

from falsify.units import get_layer, layer_names

__all__ = ["capture", "get_layer", "hooked", "layer_names"]

Hook = Callable[[nn.Module, Any, Any], Any]


@contextmanager
def hooked(model: nn.Module, hooks: Mapping[str, Hook]) -> Iterator[None]:
    """Register ``{layer name: forward hook}`` for the duration of the block, then remove them.

    A hook that returns a tensor replaces the layer's output (PyTorch forward-hook semantics).
    Removal happens in ``finally``, so an exception inside the block leaves no hook behind.
    """
    handles = []
    try:
        for name, fn in hooks.items():
            handles.append(get_layer(model, name).register_forward_hook(fn))
        yield
    finally:
        for h in handles:
            h.remove()


@contextmanager
def capture(model: nn.Module, layer: str) -> Iterator[list[torch.Tensor]]:
    """Collect the outputs of ``layer`` (detached) for every forward inside the block."""
    outputs: list[torch.Tensor] = []

    def keep(_m: nn.Module, _i: Any, out: torch.Tensor) -> None:
        outputs.append(out.detach())

    with hooked(model, {layer: keep}):
        yield outputs
