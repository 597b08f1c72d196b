"""Architectures (each a registered kind in its own module) and the deterministic training loop."""

from __future__ import annotations

from torch import nn

from falsify.errors import LocatedError
from falsify.hypothesis.kinds import ArchitectureKind
from falsify.units import UnitView, layer_names, unit_views

__all__ = ["build_model"]


def build_model(spec: ArchitectureKind, input_shape: tuple[int, ...], n_classes: int) -> nn.Module:
    """Build an untrained model from its validated spec (weights from the global RNG).

    The views the file declares in ``units`` join those the architecture declares
    (``model.unit_views``, :mod:`falsify.units`), so every measure and intervention sees them.
    """
    model = spec.build(input_shape, n_classes)
    if spec.units:
        names = layer_names(model)
        for layer, _ in spec.units:
            if layer not in names:
                loc = ("population", "model", "units", layer)
                raise LocatedError(loc, f"a layer of the model, one of {names}", layer, names)
        declared = {layer: UnitView(v.axis, v.position) for layer, v in spec.units}
        model.unit_views = unit_views(model) | declared
    return model
