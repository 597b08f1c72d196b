"""Architectures (looked up by ``kind``) and the deterministic training loop."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from torch import nn

from falsify.errors import LocatedError
from falsify.models.cnn import CNN, build_cnn
from falsify.models.mlp import MLP, build_mlp
from falsify.models.resnet import ResNet20, build_resnet20
from falsify.models.user import build_user_model
from falsify.units import UnitView, layer_names, unit_views

__all__ = ["ARCHITECTURES", "CNN", "MLP", "ResNet20", "build_model"]

# kind -> builder(spec, input_shape, n_classes)
ARCHITECTURES: dict[str, Callable[[Any, tuple[int, ...], int], nn.Module]] = {
    "mlp": build_mlp,
    "resnet20": build_resnet20,
    "factory": build_user_model,  # the user's own, by import path
    "cnn": build_cnn,
}


def build_model(spec: Any, input_shape: tuple[int, ...], n_classes: int) -> nn.Module:
    """Build an untrained model from its validated spec (weights from the global RNG).

    The views the file declares in ``units`` join those the architecture declares
    (``model.unit_views``, :mod:`falsify.units`), so every measure and intervention sees them.
    """
    model = ARCHITECTURES[spec.kind](spec, input_shape, n_classes)
    if spec.units:
        names = layer_names(model)
        for layer, _ in spec.units:
            if layer not in names:
                loc = ("population", "model", "units", layer)
                raise LocatedError(loc, f"a layer of the model, one of {names}", layer, names)
        declared = {layer: UnitView(v.axis, v.position) for layer, v in spec.units}
        model.unit_views = unit_views(model) | declared
    return model
