"""Architectures (each a registered kind in its own module) and the deterministic training loop."""

from __future__ import annotations

from torch import nn

from falsify.hypothesis.kinds import ArchitectureKind

__all__ = ["build_model", "unit_layers"]


def build_model(spec: ArchitectureKind, input_shape: tuple[int, ...], n_classes: int) -> nn.Module:
    """Build an untrained model from its validated spec (weights from the global RNG)."""
    return spec.build(input_shape, n_classes)


def unit_layers(model: nn.Module) -> tuple[str, ...]:
    """The layers whose outputs are units (post-ReLU blocks), as the architecture declares them."""
    names = getattr(model, "unit_layers", None)
    if not names:
        raise ValueError(f"{type(model).__name__} declares no unit_layers")
    return tuple(names)
