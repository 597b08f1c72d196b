"""Executing the between-conditions shape (PRODUCT.md §3) on a population grid's replicates."""

from __future__ import annotations

import re
from collections.abc import Callable
from functools import partial
from pathlib import Path
from typing import Any

import pandas as pd

from falsify.data import Dataset
from falsify.errors import FalsifyError
from falsify.hypothesis.conditions import Condition, canonical, expand, format_value
from falsify.hypothesis.loader import HypothesisFile
from falsify.hypothesis.schema import BetweenConditionsTest, LevelContrast, ReferenceContrast
from falsify.measures.model_level import MODEL_OUTCOME_DETAILS, TrainedModel, model_outcome
from falsify.measures.selectivity import mean_selectivity
from falsify.report.figures_between import outcome_by_condition
from falsify.report.figures_modularity import DETAIL_FIGURES
from falsify.runner.outcome import Outcome
from falsify.runner.replicates import Replicate
from falsify.stats import Part, decide
from falsify.stats.between import BetweenFit, fit_contrasts, fit_levels, fit_trend
from falsify.units import default_layers

__all__ = ["run_between", "validate_between"]

_OUTCOME_LABELS = {
    "accuracy": "accuracy",
    "mean_selectivity": "mean class selectivity",
    "ablation_auc": "ablation-curve AUC",
    "direction_ablation_auc": "random-direction ablation AUC",
    "noise_auc": "layer-noise AUC",
    "corruption_accuracy": "accuracy under corruptions",
    "adversarial_accuracy": "adversarial accuracy",
    "effective_dimensionality": "effective dimensionality",
    "clusterability": "clusterability",
}


_EFFECT_KINDS = {
    "ReferenceContrast": "d_z (paired by seed)",
    "TrendContrast": "d_z of per-seed slopes",
    "LevelContrast": "d (mean / SD over seeds)",
}


def _label(outcome: Any) -> str:
    label = _OUTCOME_LABELS.get(outcome.kind, outcome.kind)
    split = getattr(outcome, "split", None)
    return f"{split} {label}" if split else label


def _reference(
    hf: HypothesisFile,
    conditions: list[Condition],
    ref: dict[str, Any],
    loc: tuple[str | int, ...],
) -> Condition:
    """The condition a mapping of grid fields names (validated with line-aware errors)."""
    fields = list(hf.hypothesis.population.conditions)
    for key in ref:
        if key not in fields:
            raise hf.error((*loc, key), f"one of the grid fields {fields}", key, fields)
    missing = [f for f in fields if f not in ref]
    if missing:
        raise hf.error(loc, f"a value for every grid field {fields}", dict(ref))
    for cond in conditions:
        if all(canonical(cond.value(f)) == canonical(_coerce(cond, f, ref[f])) for f in fields):
            return cond
    key = fields[0]
    values = [format_value(v) for v in dict.fromkeys(c.value(key) for c in conditions)]
    raise hf.error((*loc, key), f"one of the grid's values {values}", ref[key])


def _coerce(cond: Condition, field: str, value: Any) -> Any:
    """``value`` as the grid field's type (so 0 names the condition α = 0.0)."""
    current = cond.value(field)
    if isinstance(current, bool) or not isinstance(current, (int, float)):
        return value
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return float(value)
    return value


def _comparisons(test: BetweenConditionsTest) -> list[tuple[Any, tuple[str | int, ...]]]:
    """Each outcome part's comparison and its location in the file."""
    if test.outcome is not None:
        return [(test.compare, ("test", "compare"))]
    return [
        (op.compare, ("test", "outcomes", i, "compare"))
        if op.compare is not None
        else (test.compare, ("test", "compare"))
        for i, op in enumerate(test.outcomes)
    ]


def _levels(
    hf: HypothesisFile, conditions: list[Condition], compare: LevelContrast, loc: tuple
) -> list[Condition]:
    if not compare.conditions:
        return conditions
    return [
        _reference(hf, conditions, mapping, (*loc, "conditions", i))
        for i, mapping in enumerate(compare.conditions)
    ]


def validate_between(hf: HypothesisFile, data: Dataset) -> None:
    """Checks before training: a grid of ≥ 2 conditions; the reference, levels or factor exist."""
    hyp = hf.hypothesis
    test = hyp.test
    assert isinstance(test, BetweenConditionsTest)
    if test.outcome is not None and test.outcomes:
        raise hf.error(
            ("test", "outcomes"), "absent when 'outcome' is given (one or the other)", "both"
        )
    if test.outcome is None and not test.outcomes:
        raise hf.error(("test",), "given an 'outcome' or a list of 'outcomes'", "neither")
    seen: set[str] = set()
    for i, op in enumerate(test.outcomes):
        if op.name in seen:
            raise hf.error(("test", "outcomes", i, "name"), "a name no other outcome has", op.name)
        seen.add(op.name)
    conditions = expand(hyp.population)
    if len(conditions) < 2:
        raise hf.error(
            ("population", "conditions"),
            "a grid of at least 2 conditions (a between-conditions test compares them)",
            dict(hyp.population.conditions),
        )
    for compare, loc in _comparisons(test):
        _validate_compare(hf, conditions, compare, loc)


def _validate_compare(
    hf: HypothesisFile, conditions: list[Condition], compare: Any, loc: tuple
) -> None:
    hyp = hf.hypothesis
    if isinstance(compare, ReferenceContrast):
        _reference(hf, conditions, compare.reference, (*loc, "reference"))
        return
    if isinstance(compare, LevelContrast):
        _levels(hf, conditions, compare, loc)
        return
    fields = list(hyp.population.conditions)
    factor = compare.factor
    if factor not in fields:
        raise hf.error((*loc, "factor"), f"one of the grid fields {fields}", factor, fields)
    if len(fields) > 1:
        raise hf.error(
            ("population", "conditions"),
            f"a grid of the trend's factor {factor!r} alone (other fields would be confounded "
            "with it or need a model of their own)",
            fields,
        )
    values = [c.value(factor) for c in conditions]
    numeric = all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in values)
    if compare.scale == "value" and not numeric:
        raise hf.error(
            (*loc, "scale"), "'rank' for a factor whose values are not numbers", compare.scale
        )


def _fit(
    hf: HypothesisFile,
    table: pd.DataFrame,
    conditions: list[Condition],
    compare: Any,
    loc: tuple,
) -> tuple[BetweenFit, list[tuple[str, str]]]:
    """The statistical fit and (part name, estimate key) pairs, in condition order."""
    test = hf.hypothesis.test
    assert isinstance(test, BetweenConditionsTest)
    names = [c.name for c in conditions]
    if isinstance(compare, ReferenceContrast):
        ref = _reference(hf, conditions, compare.reference, (*loc, "reference")).name
        fit = fit_contrasts(table, ref, names, test.model)
        return fit, [(f"{c} vs {ref}", c) for c in names if c != ref]
    if isinstance(compare, LevelContrast):
        chosen = [c.name for c in _levels(hf, conditions, compare, loc)]
        return fit_levels(table, chosen), [(f"{c} vs 0", c) for c in chosen]
    factor = compare.factor
    position = {c.name: i for i, c in enumerate(conditions)}
    value = {c.name: c.value(factor) for c in conditions}
    xs = table["condition"].map(position if compare.scale == "rank" else value)
    fit = fit_trend(table.assign(x=xs.astype(float)), test.model)
    unit = "grid step" if compare.scale == "rank" else "unit"
    short = factor.rsplit(".", 1)[-1]
    return fit, [(f"slope per {unit} of {short}", "trend")]


def _detail_figures(
    named: list[Any], details: list[dict[str, Any]], order: list[str], level: float
) -> dict[str, Callable[[Path], None]]:
    """One extra figure per outcome part whose kind draws its details (e.g. baselines)."""
    out: dict[str, Callable[[Path], None]] = {}
    if not details:
        return out
    table = pd.DataFrame(details)
    drawn: set[tuple[Any, str]] = set()
    for op in named:
        draw = DETAIL_FIGURES.get(op.outcome.kind)
        rows = table[table["outcome"] == op.name]
        # outcomes that differ only in how they use the same details (e.g. clusterability
        # against one baseline or another) share one figure
        same = (draw, rows.drop(columns=["outcome", "value"]).to_csv(index=False))
        if draw is not None and len(rows) and same not in drawn:
            drawn.add(same)
            suffix = "-" + re.sub(r"[^A-Za-z0-9]+", "-", op.name).strip("-").lower()
            out[suffix] = partial(draw, rows, order, op.outcome, level)
    return out


def run_between(hf: HypothesisFile, data: Dataset, reps: list[Replicate]) -> Outcome:
    """Outcomes per trained model; contrasts or a trend across conditions; Holm; verdict."""
    hyp = hf.hypothesis
    test = hyp.test
    assert isinstance(test, BetweenConditionsTest)
    conditions = expand(hyp.population)
    by_name = {c.name: c for c in conditions}
    named = test.named_outcomes()
    several = len(named) > 1
    rows: list[dict[str, Any]] = []
    details: list[dict[str, Any]] = []
    for rep in reps:
        cond = by_name[rep.condition]
        trained = TrainedModel(rep.model, cond.population, data, rep.seed)
        if "mean_selectivity" in rep.metrics:
            achieved = rep.metrics["mean_selectivity"]
        else:
            x_test, y_test = trained.split("test")
            layers = default_layers(rep.model, cond.population.training.selectivity_layers)
            achieved = mean_selectivity(rep.model, layers, x_test, y_test, data.n_classes)
        for part in named:
            detail = MODEL_OUTCOME_DETAILS.get(part.outcome.kind)
            found = detail(part.outcome, trained) if detail is not None else {}
            if found:
                details.append(
                    {"outcome": part.name, "condition": rep.condition, "seed": rep.seed, **found}
                )
            rows.append(
                {
                    "part": rep.condition,
                    "seed": rep.seed,
                    "statistic": found["value"] if found else model_outcome(part.outcome, trained),
                    **({"outcome": part.name} if several else {}),
                    "test_accuracy": rep.test_accuracy,
                    "mean_selectivity": achieved,
                    "train_loss": rep.train_loss,
                }
            )
    replicates = pd.DataFrame(rows)
    n_seeds = replicates["seed"].nunique()
    parts: list[Part] = []
    notes: list[str] = []
    methods: list[str] = []
    for op, (compare, loc) in zip(named, _comparisons(test), strict=True):
        sub = replicates[replicates["outcome"] == op.name] if several else replicates
        table = sub.rename(columns={"part": "condition", "statistic": "y"})[
            ["condition", "seed", "y"]
        ]
        try:
            fit, part_keys = _fit(hf, table, conditions, compare, loc)
        except ValueError as exc:
            raise FalsifyError(f"{hf.path}: no verdict for {op.name}: {exc}.") from None
        notes += [f"{op.name}: {n}" if several else n for n in fit.notes]
        methods.append(fit.method)
        if op.direction is not None and op.direction != hyp.prediction.direction:
            notes.append(
                f"The parts of {op.name} predict a {op.direction} effect (the rule above, "
                "mirrored)."
            )
        parts += [
            Part(
                name=f"{op.name}: {name}" if several else name,
                estimate=fit.estimates[key],
                n_replicates=n_seeds,
                effect_size=fit.effect_sizes.get(key, float("nan")),
                effect_size_kind=_EFFECT_KINDS[type(compare).__name__],
                method=fit.method,
                direction=op.direction,
            )
            for name, key in part_keys
        ]
    parts_table, verdict = decide(parts, hyp.prediction)
    settings = pd.DataFrame(
        [{"condition": c.name, **{k: format_value(v) for k, v in c.settings}} for c in conditions]
    )
    tidy = replicates.rename(columns={"part": "condition", "statistic": "value"}).merge(
        settings, on="condition", how="left"
    )
    if details:
        extra = pd.DataFrame(details).drop(columns="value")
        keys = ["condition", "seed"] + (["outcome"] if several else [])
        tidy = tidy.merge(extra if several else extra.drop(columns="outcome"), on=keys, how="left")
    if not several:
        tidy = tidy.rename(columns={"value": "outcome"})
    outcome_labels = {op.name: _label(op.outcome) for op in named}
    label = _label(named[0].outcome) if not several else "outcome"
    kind = {"reference": "difference in", "trend": "slope of", "level": "mean of"}[
        test.compare.kind
    ]
    labels = {
        "statistic": f"{kind} {label}",
        "replicate_statistic": f"outcome: {label}" if not several else "value",
        "part": "condition",
    }
    level = 1 - 2 * hyp.prediction.alpha
    notes.append(
        "replicates in the result table counts seeds per condition: each comparison pairs the "
        "models of its conditions that share a seed."
    )
    return Outcome(
        file=hf,
        verdict=verdict,
        parts=parts_table,
        replicates=replicates,
        tidy=tidy,
        tidy_grain="replicate (condition × seed)" + (" × outcome" if several else ""),
        labels=labels,
        figures={
            "": partial(
                outcome_by_condition,
                replicates,
                [c.name for c in conditions],
                outcome_labels,
                level,
            ),
            **_detail_figures(named, details, [c.name for c in conditions], level),
        },
        notes=list(dict.fromkeys(notes)),
    )
