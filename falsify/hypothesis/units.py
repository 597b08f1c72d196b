"""The file's words for units: a declared unit view, and the fill of an ablation.

``population.model.units: {layer: {axis: -1, reduce: mean}}`` (or ``{axis: -1, position: 3}``)
declares where a layer's units live without touching the model's code; each entry becomes a
:class:`falsify.units.UnitView` (docs/own-models-and-data.md, "Declaring a unit view").
``Fill`` is the one type of every ablation's ``value:`` (docs/methods.md, "Ablation fills").
Pydantic only: nothing here imports torch.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, PlainSerializer, model_validator

__all__ = ["Fill", "UnitViewSpec", "UnitViews"]

Fill = Annotated[
    Literal["zero", "mean", "resample"],
    Field(
        description="what an ablated unit is set to: 0, its mean over the split, or its value "
        "on another input of the split (resample)"
    ),
]


class UnitViewSpec(BaseModel):
    """One layer's unit view: ``axis`` holds the units (batch is 0; negative counts from the
    end); the other non-batch axes ``reduce: mean``, or are read at one ``position``."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    axis: int = Field(1, description="the axis of the layer's output that holds the units")
    reduce: Literal["mean", "position"] = "mean"
    position: int | None = None

    @model_validator(mode="before")
    @classmethod
    def _position_means_reduce_position(cls, v: Any) -> Any:
        if isinstance(v, dict) and v.get("position") is not None and "reduce" not in v:
            return {**v, "reduce": "position"}
        return v

    @model_validator(mode="after")
    def _axis_and_position(self) -> UnitViewSpec:
        if self.axis == 0:
            raise ValueError("a non-batch axis (axis 0 is the batch)")
        if (self.reduce == "position") != (self.position is not None):
            raise ValueError("'position: <index>' exactly when reduce is position")
        return self


def _items(v: Any) -> Any:
    return tuple(v.items()) if isinstance(v, dict) else v


class _MappingSchema:
    """The file's spelling, ``{layer: view}``, in the JSON Schema (inside it is a tuple of pairs)."""

    def __get_pydantic_json_schema__(self, core_schema: Any, handler: Any) -> dict[str, Any]:
        pairs = handler(core_schema)
        return {"type": "object", "additionalProperties": pairs["items"]["prefixItems"][1]}


# {layer: view} in the file; a tuple of (layer, view) pairs inside, so specs stay hashable.
UnitViews = Annotated[
    tuple[tuple[str, UnitViewSpec], ...],
    BeforeValidator(_items),
    _MappingSchema(),
    PlainSerializer(lambda pairs: {k: v.model_dump(exclude_defaults=True) for k, v in pairs}),
]
