"""How a between-conditions test compares its conditions: each contrast is a registered kind
with its own validation, fit and wording (PRODUCT.md §3; docs/between-conditions.md)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, ClassVar, Literal

import pandas as pd

from falsify.errors import LocatedError, quote
from falsify.hypothesis.conditions import Condition, canonical, format_value
from falsify.hypothesis.kinds import ContrastKind, register
from falsify.stats.between import BetweenFit, fit_contrasts, fit_levels, fit_trend

if TYPE_CHECKING:
    from falsify.hypothesis.loader import HypothesisFile

__all__ = ["LevelContrast", "ReferenceContrast", "TrendContrast", "find_condition"]

Loc = tuple[str | int, ...]


def find_condition(
    hf: HypothesisFile, conditions: list[Condition], ref: dict[str, Any], loc: Loc
) -> Condition:
    """The condition a mapping of grid fields names (validated with located errors)."""
    fields = list(hf.hypothesis.population.conditions)
    for key in ref:
        if key not in fields:
            raise LocatedError((*loc, key), f"one of the grid fields {fields}", key, fields)
    missing = [f for f in fields if f not in ref]
    if missing:
        raise LocatedError(loc, f"a value for every grid field {fields}", dict(ref))
    for cond in conditions:
        if all(canonical(cond.value(f)) == canonical(_coerce(cond, f, ref[f])) for f in fields):
            return cond
    key = fields[0]
    values = [format_value(v) for v in dict.fromkeys(c.value(key) for c in conditions)]
    # A grid may list thousands of values: the message quotes them as it quotes any value.
    raise LocatedError((*loc, key), f"one of the grid's values {quote(values)}", ref[key])


def _coerce(cond: Condition, field: str, value: Any) -> Any:
    """``value`` as the grid field's type (so 0 names the condition α = 0.0)."""
    current = cond.value(field)
    if isinstance(current, bool) or not isinstance(current, (int, float)):
        return value
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return float(value)
    return value


class _Contrast(ContrastKind):
    docs: ClassVar[str] = "docs/between-conditions.md"


@register
class ReferenceContrast(_Contrast):
    """Each condition against the reference condition, paired by seed: one part per contrast."""

    kind: Literal["reference"]
    reference: dict[str, Any]  # grid field -> the reference value, for every grid field

    label: ClassVar[str] = "difference against a reference condition"
    effect_size_kind: ClassVar[str] = "d_z (paired by seed)"
    wording: ClassVar[str] = "difference in"
    example: ClassVar[dict[str, Any]] = {"reference": {"training.label_noise": 0.0}}

    def validate_grid(self, hf: HypothesisFile, conditions: list[Condition], loc: Loc) -> None:
        find_condition(hf, conditions, self.reference, (*loc, "reference"))

    def fit(
        self,
        hf: HypothesisFile,
        table: pd.DataFrame,
        conditions: list[Condition],
        loc: Loc,
        model: str,
    ) -> tuple[BetweenFit, list[tuple[str, str]]]:
        names = [c.name for c in conditions]
        ref = find_condition(hf, conditions, self.reference, (*loc, "reference")).name
        fit = fit_contrasts(table, ref, names, model)
        return fit, [(f"{c} vs {ref}", c) for c in names if c != ref]


@register
class TrendContrast(_Contrast):
    """The slope of the outcome over an ordered grid of one field: one part."""

    kind: Literal["trend"]
    factor: str  # the grid field, e.g. training.selectivity_alpha
    scale: Literal["value", "rank"] = "value"  # slope per unit of the value, or per grid step

    label: ClassVar[str] = "trend over an ordered grid"
    effect_size_kind: ClassVar[str] = "d_z of per-seed slopes"
    wording: ClassVar[str] = "slope of"
    example: ClassVar[dict[str, Any]] = {"factor": "training.label_noise"}

    def validate_grid(self, hf: HypothesisFile, conditions: list[Condition], loc: Loc) -> None:
        fields = list(hf.hypothesis.population.conditions)
        factor = self.factor
        if factor not in fields:
            raise LocatedError((*loc, "factor"), f"one of the grid fields {fields}", factor, fields)
        if len(fields) > 1:
            raise LocatedError(
                ("population", "conditions"),
                f"a grid of the trend's factor {factor!r} alone (other fields would be "
                "confounded with it or need a model of their own)",
                fields,
            )
        values = [c.value(factor) for c in conditions]
        numeric = all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in values)
        if self.scale == "value" and not numeric:
            raise LocatedError(
                (*loc, "scale"), "'rank' for a factor whose values are not numbers", self.scale
            )

    def fit(
        self,
        hf: HypothesisFile,
        table: pd.DataFrame,
        conditions: list[Condition],
        loc: Loc,
        model: str,
    ) -> tuple[BetweenFit, list[tuple[str, str]]]:
        position = {c.name: i for i, c in enumerate(conditions)}
        value = {c.name: c.value(self.factor) for c in conditions}
        xs = table["condition"].map(position if self.scale == "rank" else value)
        alpha = hf.hypothesis.prediction.alpha
        fit = fit_trend(table.assign(x=xs.astype(float)), model, alpha)
        unit = "grid step" if self.scale == "rank" else "unit"
        short = self.factor.partition(".")[2]
        return fit, [(f"slope per {unit} of {short}", "trend")]


@register
class LevelContrast(_Contrast):
    """The outcome's mean in each listed condition against 0, over seeds: one part per
    condition. Meant for an outcome that is already a difference from its own baseline (e.g.
    clusterability minus its shuffled-weights baseline)."""

    kind: Literal["level"]
    # each entry: grid field -> value, for every grid field; empty: every condition
    conditions: tuple[dict[str, Any], ...] = ()

    label: ClassVar[str] = "level against 0"
    effect_size_kind: ClassVar[str] = "d (mean / SD over seeds)"
    wording: ClassVar[str] = "mean of"

    def _chosen(self, hf: HypothesisFile, conditions: list[Condition], loc: Loc) -> list[Condition]:
        if not self.conditions:
            return conditions
        return [
            find_condition(hf, conditions, mapping, (*loc, "conditions", i))
            for i, mapping in enumerate(self.conditions)
        ]

    def validate_grid(self, hf: HypothesisFile, conditions: list[Condition], loc: Loc) -> None:
        self._chosen(hf, conditions, loc)

    def fit(
        self,
        hf: HypothesisFile,
        table: pd.DataFrame,
        conditions: list[Condition],
        loc: Loc,
        model: str,
    ) -> tuple[BetweenFit, list[tuple[str, str]]]:
        chosen = [c.name for c in self._chosen(hf, conditions, loc)]
        return fit_levels(table, chosen), [(f"{c} vs 0", c) for c in chosen]
