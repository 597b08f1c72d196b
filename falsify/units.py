"""Where a layer's units live: the one unit view every measure and intervention reads through.

A :class:`UnitView` says which axis of a layer's output holds the units (batch is axis 0) and
how the other non-batch axes reduce: ``mean`` over them (a conv channel averaged over space, a
token layer's channel averaged over positions), or one ``position`` (the units at that index of
the other axes, flattened in order; an ablation then acts at that position only). Selectivity,
attributions, the selectivity regularizer, ablation fills, the ablation engine, perturbations
and clustering all read units through it (STYLE.md, "Where a representation lives is data";
docs/own-models-and-data.md, "Declaring a unit view").

An architecture declares its unit layers as ``self.unit_views = {layer: UnitView(...)}``; a
hypothesis file may add views for a user model's layers (``population.model.units``), which
:func:`falsify.models.build_model` merges into the same mapping. :func:`unit_view` is the one
lookup; it refuses a layer that holds no units (the logits, a flattened input).

This module sits low in the package: it imports only torch and :mod:`falsify.errors`.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import nn

from falsify.errors import FalsifyError, LocatedError, field_error

__all__ = [
    "CHANNELS",
    "UnitView",
    "default_layers",
    "get_layer",
    "layer_names",
    "unit_view",
    "unit_views",
    "weight_module",
]

_WEIGHTED = (nn.Linear, nn.Conv1d, nn.Conv2d, nn.Conv3d)


@dataclass(frozen=True)
class UnitView:
    """Units on ``axis`` of a layer's output ``[batch, …]``; the other non-batch axes are
    averaged (``position is None``) or read at the flat index ``position`` of those axes."""

    axis: int = 1
    position: int | None = None

    def _axis(self, act: torch.Tensor) -> int:
        ax = self.axis % act.dim() if -act.dim() <= self.axis < act.dim() else None
        if ax is None or ax == 0:
            raise FalsifyError(
                f"The unit view's 'axis' must be a non-batch axis of the layer's output of shape "
                f"{list(act.shape)}. Got {self.axis} instead."
            )
        return ax

    def _canon(self, t: torch.Tensor, ax: int) -> torch.Tensor:
        """``[batch, *]`` → ``[batch, units, rest]``: units on axis 1, other axes flattened."""
        t = t.movedim(ax, 1)
        out = t.flatten(2) if t.dim() > 2 else t.unsqueeze(-1)
        if self.position is not None and not -out.shape[2] <= self.position < out.shape[2]:
            raise FalsifyError(
                f"The unit view's 'position' must lie in 0..{out.shape[2] - 1} for a layer "
                f"output of shape {list(t.movedim(1, ax).shape)}. Got {self.position} instead."
            )
        return out

    def n_units(self, act: torch.Tensor) -> int:
        """The number of units of a layer whose output is ``act`` ``[batch, …]``."""
        return int(act.shape[self._axis(act)])

    def read(self, act: torch.Tensor) -> torch.Tensor:
        """``[batch, …]`` → ``[batch, units]``: mean over the other axes, or at ``position``.

        Differentiable, so the training-time selectivity term reads through it too.
        """
        ax = self._axis(act)
        if act.dim() == 2 and self.position is None:
            return act if ax == 1 else act.T
        canon = self._canon(act, ax)  # [batch, units, rest]
        return canon.mean(dim=2) if self.position is None else canon[:, :, self.position]

    def spread(self, act: torch.Tensor) -> torch.Tensor:
        """Each unit's standard deviation over the batch (and the averaged axes): ``[units]``."""
        canon = self._canon(act, self._axis(act))  # [batch, units, rest]
        if self.position is not None:
            return canon[:, :, self.position].std(dim=0)
        return canon.transpose(0, 1).reshape(canon.shape[1], -1).std(dim=1)

    def scope(self, act: torch.Tensor) -> torch.Tensor | None:
        """Where the units are read, broadcastable to ``act``: ``None`` for everywhere (mean),
        else a boolean tensor true at ``position`` of the other axes."""
        if self.position is None:
            return None
        ax = self._axis(act)
        others = [d for d in range(1, act.dim()) if d != ax]
        at = torch.zeros(math.prod(act.shape[d] for d in others), dtype=torch.bool)
        self._canon(act[:1], ax)  # checks the position's range
        at[self.position] = True
        shape = [act.shape[d] if d in others else 1 for d in range(act.dim())]
        return at.view(shape).to(act.device)

    def per_unit(self, act: torch.Tensor, values: torch.Tensor) -> torch.Tensor:
        """``values`` ``[units]`` (or ``[rows, units]``) shaped to broadcast against ``act``."""
        ax = self._axis(act)
        shape = [1] * act.dim()
        shape[ax] = values.shape[-1]
        if values.dim() == 2:
            shape[0] = values.shape[0]
        return values.view(shape)

    def apply(self, act: torch.Tensor, masks: torch.Tensor, fill: torch.Tensor) -> torch.Tensor:
        """``act`` ``[batch, …]`` with the units in ``masks`` set to ``fill``.

        ``masks`` is one mask ``[units]`` or one per row ``[batch, units]`` (bool); ``fill`` is
        ``[…]`` (the same for every row) or ``[batch, …]`` (one per row, as resample gives).
        A position view changes the units at its position only.
        """
        m = self.per_unit(act, masks)
        scope = self.scope(act)
        if scope is not None:
            m = m & scope
        return torch.where(m, fill if fill.dim() == act.dim() else fill.unsqueeze(0), act)

    def changed(self, act: torch.Tensor, fill: torch.Tensor) -> torch.Tensor:
        """``[batch, units]`` bool: whether setting the unit to ``fill`` changes ``act`` (any
        element of the unit in the view's scope differs)."""
        differs = act != (fill if fill.dim() == act.dim() else fill.unsqueeze(0))
        canon = self._canon(differs, self._axis(act))  # [batch, units, rest]
        return canon.any(dim=2) if self.position is None else canon[:, :, self.position]

    def map_units(
        self, act: torch.Tensor, fn: Callable[[torch.Tensor], torch.Tensor]
    ) -> torch.Tensor:
        """``act`` with ``fn`` applied to each unit vector ``[…, units]`` in the view's scope
        (every position for a mean view, the one position for a position view)."""
        ax = self._axis(act)
        new = fn(act.movedim(ax, -1)).movedim(-1, ax)
        scope = self.scope(act)
        return new if scope is None else torch.where(scope, new, act)


CHANNELS = UnitView(axis=1)  # [batch, units] or [batch, channels, *space], space averaged


def layer_names(model: nn.Module) -> list[str]:
    """Every named submodule path, as ``named_modules()`` gives them (the root excluded)."""
    return [name for name, _ in model.named_modules() if name]


def get_layer(model: nn.Module, name: str) -> nn.Module:
    """The submodule ``name``; the one-line error listing valid names when there is none."""
    modules = dict(model.named_modules())
    if not name or name not in modules:
        names = layer_names(model)
        raise FalsifyError(field_error(None, "layer", f"one of {names}", name, choices=names))
    return modules[name]


def unit_views(model: nn.Module) -> dict[str, UnitView]:
    """The unit layers the model declares (``model.unit_views``), with their views; ``{}`` when
    it declares none."""
    return dict(getattr(model, "unit_views", None) or {})


def unit_view(model: nn.Module, layer: str, loc: tuple[str | int, ...] = ("layer",)) -> UnitView:
    """The view of ``layer``'s units; :class:`LocatedError` at ``loc`` if it holds none.

    A declared unit layer has its view, and a module inside one reads its units the same way
    (``hidden1.linear`` as ``hidden1``). A model that declares no views at all is read with
    :data:`CHANNELS` at every layer but a ``Flatten``. Otherwise the layer is not a unit layer:
    the logits, a flattened input, a pooled read-out nobody declared.
    """
    module = get_layer(model, layer)
    views = unit_views(model)
    for name in sorted(views, key=len, reverse=True):
        if layer == name or layer.startswith(f"{name}."):
            return views[name]
    if not views and not isinstance(module, nn.Flatten):
        return CHANNELS
    declared = sorted(views)
    raise LocatedError(
        loc,
        f"a unit layer (one of {declared}, or a layer the file gives a view in "
        "'population.model.units')",
        layer,
        declared or None,
    )


def check_undeclared(
    model: nn.Module, layers: dict[str, tuple[str | int, ...]], x: torch.Tensor
) -> None:
    """For a model that declares no unit views, refuse what :data:`CHANNELS` would misread.

    One forward pass on ``x`` shows each named layer's output: the model's own output (the
    logits) holds no units, and a 3-D output ``[batch, a, b]`` is ambiguous (a 1-D conv's
    ``[batch, channels, length]`` or a token layer's ``[batch, tokens, channels]``), so its
    view must be declared in the file. ``layers``: layer name -> its field's location.
    """
    if unit_views(model):
        return
    outputs: dict[str, torch.Tensor] = {}

    def keeper(name: str):
        def keep(_m: nn.Module, _i: object, out: object) -> None:
            if isinstance(out, torch.Tensor):
                outputs[name] = out

        return keep

    handles = [get_layer(model, name).register_forward_hook(keeper(name)) for name in layers]
    try:
        with torch.no_grad():
            final = model(x)
    finally:
        for h in handles:
            h.remove()
    for name, loc in layers.items():
        out = outputs.get(name)
        if out is None:
            continue
        if out is final or (out.shape == final.shape and torch.equal(out, final)):
            raise LocatedError(
                loc, "a layer that holds units, not the model's output (its logits)", name
            )
        if out.dim() == 3:
            raise LocatedError(
                loc,
                f"a layer whose units the file declares: its output is {list(out.shape)}, "
                f"[batch, channels, length] or [batch, tokens, channels]; say which in "
                f"'population.model.units', e.g. {{{name}: {{axis: -1}}}} for units on the "
                "last axis",
                name,
            )


def default_layers(model: nn.Module, named: tuple[str, ...]) -> tuple[str, ...]:
    """``named``, or when it is empty every unit layer the model declares."""
    layers = named or tuple(unit_views(model))
    if not layers:
        raise FalsifyError(
            f"The 'layers' must be named for {type(model).__name__}, which declares no unit "
            "layers (unit_views). Got [] instead."
        )
    return layers


def weight_module(model: nn.Module, layer: str) -> nn.Module:
    """The linear or conv module whose outputs are ``layer``'s units: the module itself, or the
    one such module inside it (``hidden1`` of an MLP names ``hidden1.linear``).

    The unit view must put the units where that module puts its outputs: the last axis for a
    linear module (``axis: 1`` of a ``[batch, units]`` layer is the same), axis 1 for a conv.
    """
    module = get_layer(model, layer)
    inner = [module] if isinstance(module, _WEIGHTED) else list(module.modules())
    inner = [m for m in inner if isinstance(m, _WEIGHTED)]
    if len(inner) != 1:
        raise FalsifyError(
            f"The layer {layer!r} must be a linear or conv layer, or hold exactly one. Got "
            f"{type(module).__name__} holding {len(inner)} instead."
        )
    view = unit_view(model, layer)
    linear = isinstance(inner[0], nn.Linear)
    if (linear and view.axis not in (1, -1)) or (not linear and view.axis != 1):
        raise FalsifyError(
            f"The unit view of {layer!r} must put its units on the output axis of its "
            f"{type(inner[0]).__name__} ({'-1' if linear else '1'}). Got axis {view.axis} instead."
        )
    return inner[0]
