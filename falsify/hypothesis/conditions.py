"""Population grids: training conditions crossed from recipe fields, each at the same seeds.

``population.conditions`` maps dotted recipe fields to lists of values, e.g.::

    conditions:
      training.selectivity_alpha: [-1, 0, 1]
      model.batch_norm: [false, true]

The grid is the Cartesian product (here 6 conditions), in file order. Every condition is
trained at the population's seed list, so a comparison between two conditions can be paired by
seed (PRODUCT.md §2–§3). A condition's *resolved* population is the base population with the
condition's values set and no conditions of its own; its recipe, and so its cache key, is that
of an ordinary population, so a condition that leaves the recipe unchanged shares cache entries
with the plain population.
"""

from __future__ import annotations

import itertools
import math
from dataclasses import dataclass
from typing import Any

from pydantic import BaseModel, ValidationError

from falsify.errors import FalsifyError, field_error
from falsify.hypothesis.schema import Population

__all__ = [
    "Condition",
    "ConditionError",
    "canonical",
    "condition_fields",
    "expand",
    "format_value",
]

# Sections of the recipe a condition may vary. The data are fixed: conditions compared on
# different test sets would not be comparable.
_SECTIONS = ("model", "training")


class ConditionError(FalsifyError):
    """A bad ``population.conditions`` entry; ``loc`` is relative to the hypothesis file."""

    def __init__(
        self,
        loc: tuple[str | int, ...],
        expected: str,
        found: object,
        choices: list[str] | None = None,
    ) -> None:
        name = ".".join(str(k) for k in loc)
        super().__init__(field_error(None, name, expected, found, choices=choices))
        self.loc = loc
        self.expected = expected
        self.found = found
        self.choices = choices


@dataclass(frozen=True)
class Condition:
    """One cell of the grid: its settings and the population it resolves to."""

    index: int
    name: str  # e.g. "selectivity_alpha=-1"; "" for a population without conditions
    settings: tuple[tuple[str, Any], ...]  # (dotted field, validated value), in grid order
    population: Population  # base recipe with the settings applied and no conditions

    def value(self, field: str) -> Any:
        return dict(self.settings)[field]


def condition_fields(population: Population) -> list[str]:
    """Every dotted recipe field a condition may vary for this population's model kind."""
    out = []
    for section in _SECTIONS:
        spec = getattr(population, section)
        out += [f"{section}.{f}" for f in type(spec).model_fields if f != "kind"]
    return out


def format_value(v: Any) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, float):
        return f"{v:g}"
    if isinstance(v, (tuple, list)):
        return "[" + ",".join(format_value(x) for x in v) + "]"
    return str(v)


def canonical(v: Any) -> Any:
    """A hashable, type-aware form of a validated value (so 1 and 1.0 collide, True and 1 do not)."""
    if isinstance(v, (tuple, list)):
        return tuple(canonical(x) for x in v)
    if isinstance(v, bool):
        return ("bool", v)
    if isinstance(v, (int, float)) and not math.isnan(v):
        return ("num", float(v))
    return (type(v).__name__, v)


def _validated(spec: BaseModel, field: str, value: Any, loc: tuple[str | int, ...]) -> BaseModel:
    data = spec.model_dump()
    data[field] = value
    try:
        return type(spec).model_validate(data)
    except ValidationError as exc:
        err = exc.errors()[0]
        msg = str(err.get("msg", "a valid value"))
        for prefix in ("Value error, ", "Input should be "):
            msg = msg.removeprefix(prefix)
        raise ConditionError(loc, msg, value) from None


def expand(population: Population) -> list[Condition]:
    """The grid of conditions, each resolved to a plain population; one condition if none.

    Raises :class:`ConditionError` (with the location of the offending entry) for an unknown
    field, a value the field does not accept, or a value listed twice.
    """
    if not population.conditions:
        return [Condition(0, "", (), population)]
    allowed = condition_fields(population)
    axes: list[list[tuple[str, Any]]] = []
    for key, values in population.conditions.items():
        base = ("population", "conditions", key)
        section, _, field = key.partition(".")
        if key not in allowed:
            raise ConditionError(base, f"a recipe field, one of {allowed}", key, choices=allowed)
        spec = getattr(population, section)
        axis: list[tuple[str, Any]] = []
        seen: set[Any] = set()
        for i, value in enumerate(values):
            resolved = getattr(_validated(spec, field, value, (*base, i)), field)
            if canonical(resolved) in seen:
                raise ConditionError(
                    (*base, i),
                    "a list of distinct values (a repeated value is one condition)",
                    value,
                )
            seen.add(canonical(resolved))
            axis.append((key, resolved))
        axes.append(axis)
    short = [k.rsplit(".", 1)[-1] for k in population.conditions]
    labels = short if len(set(short)) == len(short) else list(population.conditions)
    out = []
    for index, cell in enumerate(itertools.product(*axes)):
        update: dict[str, Any] = {"conditions": {}}
        for section in _SECTIONS:
            spec = getattr(population, section)
            data = spec.model_dump()
            for key, value in cell:
                sec, _, field = key.partition(".")
                if sec == section:
                    data[field] = value
            update[section] = type(spec).model_validate(data)
        name = ", ".join(
            f"{label}={format_value(value)}" for label, (_, value) in zip(labels, cell, strict=True)
        )
        settings = tuple(cell)
        out.append(Condition(index, name, settings, population.model_copy(update=update)))
    return out
