"""Choosing the device a run uses."""

from __future__ import annotations

from typing import TYPE_CHECKING

from falsify.errors import FalsifyError, field_error

if TYPE_CHECKING:
    import torch

__all__ = ["DEVICES", "resolve_device"]

DEVICES = ("auto", "cpu", "cuda")


def resolve_device(name: str) -> torch.device:
    """``auto`` is CUDA when a GPU is visible, else the CPU; ``cuda`` without a GPU is an error."""
    import torch  # here, not at the top: the CLI's parser reads DEVICES without loading torch

    if name not in DEVICES:
        raise FalsifyError(field_error(None, "--device", f"one of {list(DEVICES)}", name))
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise FalsifyError(
            "The '--device' must be a device this machine has. Got 'cuda' instead, but torch "
            "sees no CUDA GPU (use --device cpu or auto)."
        )
    return torch.device(name)
