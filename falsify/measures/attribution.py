"""captum layer attributions aggregated to one importance score per unit of a layer.

captum computes each example's attribution to every unit of the layer's output toward the
example's *true class* logit; this module only aggregates it:

    score(u) = mean over the evaluated examples n of |attribution(n, u)|

(|attribution| is read through the layer's unit view, :mod:`falsify.units`: a conv channel's
is averaged over space, a token layer's over positions or taken at one). The methods:

- ``layer_conductance``: conductance of each hidden unit (Dhamdhere, Sundararajan & Yan 2019,
  "How important is a neuron?", ICLR), captum ``LayerConductance``;
- ``layer_integrated_gradients``: integrated gradients of the layer's output along the path
  from the baseline's to the input's activations (Sundararajan, Taly & Yan 2017, ICML),
  captum ``LayerIntegratedGradients``;
- ``gradient_x_activation``: the unit's activation times the gradient of the target logit
  with respect to it (Shrikumar et al. 2017), captum ``LayerGradientXActivation``.

The path methods integrate from a baseline input: all zeros, or the mean of the evaluated
inputs (``baseline: mean``), with ``n_steps`` steps (Gauss–Legendre for integrated gradients,
the trapezoid rule for conductance).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import ClassVar, Literal

import torch
from pydantic import Field
from torch import nn
from torch.utils.data import Dataset as TorchDataset

from falsify.data.stream import is_stream, model_batches
from falsify.hypothesis.kinds import UnitMeasureKind, register
from falsify.units import get_layer, unit_view

__all__ = ["ATTRIBUTION_METHODS", "attribution_scores"]

Baseline = Literal["zero", "mean"]


def _conductance(
    model: nn.Module, layer: nn.Module, x: torch.Tensor, y: torch.Tensor, base: torch.Tensor, n: int
) -> torch.Tensor:
    # Conductance sums gradient × (change of the unit's activation) between consecutive path
    # points; with the trapezoid rule the points include both ends of the path, so the sum
    # telescopes over the whole path and completeness holds exactly (Gauss–Legendre points
    # stop short of the ends).
    from captum.attr import LayerConductance  # captum loads when first needed

    return LayerConductance(model, layer).attribute(
        x, baselines=base, target=y, n_steps=n, method="riemann_trapezoid"
    )


def _integrated_gradients(
    model: nn.Module, layer: nn.Module, x: torch.Tensor, y: torch.Tensor, base: torch.Tensor, n: int
) -> torch.Tensor:
    from captum.attr import LayerIntegratedGradients

    return LayerIntegratedGradients(model, layer).attribute(x, baselines=base, target=y, n_steps=n)


def _gradient_x_activation(
    model: nn.Module, layer: nn.Module, x: torch.Tensor, y: torch.Tensor, base: torch.Tensor, n: int
) -> torch.Tensor:
    from captum.attr import LayerGradientXActivation

    return LayerGradientXActivation(model, layer).attribute(x, target=y)


# method -> fn(model, layer module, inputs, targets, baseline inputs, n_steps) -> [B, units, …]
AttributionFn = Callable[
    [nn.Module, nn.Module, torch.Tensor, torch.Tensor, torch.Tensor, int], torch.Tensor
]
ATTRIBUTION_METHODS: dict[str, AttributionFn] = {
    "layer_conductance": _conductance,
    "layer_integrated_gradients": _integrated_gradients,
    "gradient_x_activation": _gradient_x_activation,
}


def attribution_scores(
    method: str,
    model: nn.Module,
    layer: str,
    x: torch.Tensor | TorchDataset,
    y: torch.Tensor,
    *,
    n_steps: int = 32,
    baseline: Baseline = "zero",
    batch_size: int = 256,
) -> torch.Tensor:
    """Mean |attribution| of each unit of ``layer`` toward the true class over ``x``: ``[units]``.

    ``x`` may be a streamed split whose items carry the labels ``y``
    (:mod:`falsify.data.stream`); the ``mean`` baseline is then the inputs' mean summed in
    float64 over the batches (equal to the in-memory float32 mean to rounding).
    """
    model.eval()
    module = get_layer(model, layer)
    view = unit_view(model, layer)
    fn = ATTRIBUTION_METHODS[method]
    if baseline == "zero":
        mean_input = None
    elif is_stream(x):
        sums = [xb.to(torch.float64).sum(dim=0) for xb, _ in model_batches(model, x, y)]
        mean_input = (torch.stack(sums).sum(dim=0) / len(x)).to(torch.float32).unsqueeze(0)  # type: ignore[arg-type]
    else:
        mean_input = x.mean(dim=0, keepdim=True)  # type: ignore[union-attr]
    total: torch.Tensor | None = None
    with torch.enable_grad():
        for xb, yb in model_batches(model, x, y, batch_size):
            base = torch.zeros_like(xb) if mean_input is None else mean_input.expand_as(xb)
            attr = fn(model, module, xb, yb, base, n_steps).detach().abs()  # [B, …]
            part = view.read(attr).to(torch.float64).sum(dim=0)  # [units]
            total = part if total is None else total + part
    if total is None:
        raise ValueError("no examples to attribute")
    return (total / len(x)).to(torch.float32)  # type: ignore[arg-type]


class _AttributionScore(UnitMeasureKind):
    docs: ClassVar[str] = "docs/modularity-and-attribution.md"
    uses_gradients: ClassVar[bool] = True
    streams: ClassVar[bool] = True

    def measure(
        self, model: nn.Module, layer: str, x: torch.Tensor, y: torch.Tensor, n_classes: int
    ) -> torch.Tensor:
        return attribution_scores(
            self.kind,
            model,
            layer,
            x,
            y,
            n_steps=getattr(self, "n_steps", 32),
            baseline=getattr(self, "baseline", "zero"),
        )


@register
class LayerConductanceScore(_AttributionScore):
    """Mean |layer conductance| of each unit toward the true class (Dhamdhere et al. 2019)."""

    kind: Literal["layer_conductance"]
    n_steps: int = Field(32, ge=2)
    baseline: Baseline = "zero"

    label: ClassVar[str] = "mean |layer conductance|"


@register
class LayerIntegratedGradientsScore(_AttributionScore):
    """Mean |layer integrated gradients| of each unit toward the true class (Sundararajan 2017)."""

    kind: Literal["layer_integrated_gradients"]
    n_steps: int = Field(32, ge=2)
    baseline: Baseline = "zero"

    label: ClassVar[str] = "mean |layer integrated gradients|"


@register
class GradientXActivationScore(_AttributionScore):
    """Mean |activation × gradient of the true-class logit| of each unit (Shrikumar 2017)."""

    kind: Literal["gradient_x_activation"]

    label: ClassVar[str] = "mean |gradient × activation|"
