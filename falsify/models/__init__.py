"""Architectures (looked up by ``kind``) and the deterministic training loop."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from torch import nn

from falsify.models.cnn import CNN, build_cnn
from falsify.models.mlp import MLP, build_mlp
from falsify.models.resnet import ResNet20, build_resnet20
from falsify.models.user import build_user_model

__all__ = ["ARCHITECTURES", "CNN", "MLP", "ResNet20", "build_model", "unit_layers"]

# kind -> builder(spec, input_shape, n_classes)
ARCHITECTURES: dict[str, Callable[[Any, tuple[int, ...], int], nn.Module]] = {
    "mlp": build_mlp,
    "resnet20": build_resnet20,
    "factory": build_user_model,  # the user's own, by import path
    "cnn": build_cnn,
}


def build_model(spec: Any, input_shape: tuple[int, ...], n_classes: int) -> nn.Module:
    """Build an untrained model from its validated spec (weights from the global RNG)."""
    return ARCHITECTURES[spec.kind](spec, input_shape, n_classes)


def unit_layers(model: nn.Module) -> tuple[str, ...]:
    """The layers whose outputs are units (post-ReLU blocks), as the architecture declares them."""
    names = getattr(model, "unit_layers", None)
    if not names:
        raise ValueError(f"{type(model).__name__} declares no unit_layers")
    return tuple(names)
