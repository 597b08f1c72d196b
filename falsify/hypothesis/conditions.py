"""Population grids: training conditions crossed from recipe fields, each at the same seeds.

``population.conditions`` maps dotted recipe fields to lists of values, e.g.::

    conditions:
      training.selectivity.alpha: [-1, 0, 1]
      model.batch_norm: [false, true]

A regularizer block's field is named through its block (``training.enmeshment.lam``) or by its
older flat name (``training.enmeshment_lambda``); the grid keeps the key as written, so
conditions and the comparisons that name them read as in the file.

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

from falsify.errors import LocatedError
from falsify.hypothesis.kinds import RegularizerKind
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


class ConditionError(LocatedError):
    """A bad ``population.conditions`` entry; ``loc`` is relative to the hypothesis file."""


@dataclass(frozen=True)
class Condition:
    """One cell of the grid: its settings and the population it resolves to."""

    index: int
    name: str  # e.g. "selectivity.alpha=-1"; "" for a population without conditions
    settings: tuple[tuple[str, Any], ...]  # (dotted field, validated value), in grid order
    population: Population  # base recipe with the settings applied and no conditions

    def value(self, field: str) -> Any:
        return dict(self.settings)[field]


def _paths(population: Population) -> dict[str, tuple[str, ...]]:
    """Every dotted recipe field a condition may vary -> its path (section, field[, sub])."""
    out: dict[str, tuple[str, ...]] = {}
    for section in _SECTIONS:
        spec = getattr(population, section)
        for name in type(spec).model_fields:
            value = getattr(spec, name)
            if name == "kind":
                continue
            if not isinstance(value, RegularizerKind):
                out[f"{section}.{name}"] = (section, name)
                continue
            block = type(value)
            for sub in block.model_fields:
                if sub != "kind":
                    out[f"{section}.{name}.{sub}"] = (section, name, sub)
            for old, new in block.legacy_fields.items():
                out[f"{section}.{old}"] = (section, name, new)
    return out


def condition_fields(population: Population) -> list[str]:
    """Every dotted recipe field a condition may vary for this population's model kind."""
    return list(_paths(population))


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


def _set(data: dict[str, Any], path: tuple[str, ...], value: Any) -> None:
    for key in path[:-1]:
        data = data[key]
    data[path[-1]] = value


def _validated(
    spec: BaseModel, path: tuple[str, ...], value: Any, loc: tuple[str | int, ...]
) -> Any:
    """``value`` as the field at ``path`` of ``spec`` validates it."""
    data = spec.model_dump()
    _set(data, path, value)
    try:
        out: Any = type(spec).model_validate(data)
        for key in path:
            out = getattr(out, key)
        return out
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
    paths = _paths(population)
    allowed = list(paths)
    axes: list[list[tuple[str, Any]]] = []
    varied: dict[tuple[str, ...], str] = {}
    for key, values in population.conditions.items():
        base = ("population", "conditions", key)
        if key not in paths:
            raise ConditionError(base, f"a recipe field, one of {allowed}", key, choices=allowed)
        section, *path = paths[key]
        other = varied.setdefault(paths[key], key)
        if other != key:
            raise ConditionError(
                base, f"absent, as {other!r} is the same field (one spelling)", key
            )
        spec = getattr(population, section)
        axis: list[tuple[str, Any]] = []
        seen: set[Any] = set()
        for i, value in enumerate(values):
            resolved = _validated(spec, tuple(path), value, (*base, i))
            if canonical(resolved) in seen:
                raise ConditionError(
                    (*base, i),
                    "a list of distinct values (a repeated value is one condition)",
                    value,
                )
            seen.add(canonical(resolved))
            axis.append((key, resolved))
        axes.append(axis)
    short = [k.partition(".")[2] for k in population.conditions]
    labels = short if len(set(short)) == len(short) else list(population.conditions)
    out = []
    for index, cell in enumerate(itertools.product(*axes)):
        update: dict[str, Any] = {"conditions": {}}
        for section in _SECTIONS:
            spec = getattr(population, section)
            data = spec.model_dump()
            for key, value in cell:
                sec, *path = paths[key]
                if sec == section:
                    _set(data, tuple(path), value)
            update[section] = type(spec).model_validate(data)
        name = ", ".join(
            f"{label}={format_value(value)}" for label, (_, value) in zip(labels, cell, strict=True)
        )
        settings = tuple(cell)
        out.append(Condition(index, name, settings, population.model_copy(update=update)))
    return out
