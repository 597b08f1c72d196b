"""The between-conditions shape (PRODUCT.md §3): a model-level outcome compared across the
conditions of a population grid; replicates are seeds."""

from __future__ import annotations

import re
from typing import TYPE_CHECKING, Any, ClassVar, Literal

import pandas as pd
from pydantic import Field

from falsify.errors import FalsifyError, LocatedError
from falsify.hypothesis.conditions import expand, format_value
from falsify.hypothesis.kinds import Comparison, ContrastKind, ModelOutcome, ShapeKind, register
from falsify.hypothesis.types import Frozen
from falsify.measures.model_level import TrainedModel
from falsify.shapes.base import Evidence, Figure
from falsify.stats import Part

if TYPE_CHECKING:
    from falsify.hypothesis.loader import HypothesisFile

__all__ = ["BetweenConditionsTest", "OutcomePart"]


class OutcomePart(Frozen):
    """One of several outcomes of a between-conditions test, with its own predicted direction
    and, optionally, its own comparison (default: the test's ``compare``)."""

    name: str = Field(min_length=1)
    outcome: ModelOutcome
    direction: Literal["positive", "negative", "none"] | None = None  # default: the prediction's
    compare: Comparison | None = None


@register
class BetweenConditionsTest(ShapeKind):
    """A model-level outcome compared across the conditions of a grid (PRODUCT.md §3).

    Either one ``outcome``, or several named ``outcomes`` (each comparison of each outcome is
    a part; all parts are adjusted together).
    """

    kind: Literal["between_conditions"]
    outcome: ModelOutcome | None = None
    outcomes: tuple[OutcomePart, ...] = ()
    compare: Comparison
    model: Literal["ols", "mixed"] = "ols"

    streams: ClassVar[bool] = True
    label: ClassVar[str] = "between conditions"
    docs: ClassVar[str] = "docs/between-conditions.md"
    compares_conditions: ClassVar[bool] = True
    figure: ClassVar[str] = "outcome_by_condition"
    simulator: ClassVar[str] = "between-conditions"
    example: ClassVar[dict[str, Any]] = {
        "outcome": {"kind": "accuracy"},
        "compare": {"kind": "reference", "reference": {"training.label_noise": 0.0}},
    }

    def named_outcomes(self) -> list[OutcomePart]:
        """The outcomes as parts; a single ``outcome`` is one unnamed part."""
        if self.outcome is not None:
            return [OutcomePart(name=self.outcome.kind, outcome=self.outcome)]
        return list(self.outcomes)

    def comparisons(self) -> list[tuple[ContrastKind, tuple[str | int, ...]]]:
        """Each outcome part's comparison and its location in the file."""
        if self.outcome is not None:
            return [(self.compare, ("test", "compare"))]
        return [
            (op.compare, ("test", "outcomes", i, "compare"))
            if op.compare is not None
            else (self.compare, ("test", "compare"))
            for i, op in enumerate(self.outcomes)
        ]

    def check(self, hf: HypothesisFile, model: Any, data: Any) -> None:
        """Before training: one of outcome / outcomes, distinct names, a grid of ≥ 2
        conditions, and every comparison valid on it."""
        if self.outcome is not None and self.outcomes:
            raise LocatedError(
                ("test", "outcomes"), "absent when 'outcome' is given (one or the other)", "both"
            )
        if self.outcome is None and not self.outcomes:
            raise LocatedError(("test",), "given an 'outcome' or a list of 'outcomes'", "neither")
        seen: set[str] = set()
        for i, op in enumerate(self.outcomes):
            if op.name in seen:
                raise LocatedError(
                    ("test", "outcomes", i, "name"), "a name no other outcome has", op.name
                )
            seen.add(op.name)
        pop = hf.hypothesis.population
        conditions = expand(pop)
        if len(conditions) < 2:
            raise LocatedError(
                ("population", "conditions"),
                "a grid of at least 2 conditions (a between-conditions test compares them)",
                dict(pop.conditions),
            )
        for compare, loc in self.comparisons():
            compare.validate_grid(hf, conditions, loc)
        method = hf.hypothesis.prediction.method
        if self.model == "mixed" and method != "t":
            raise LocatedError(
                ("prediction", "method"),
                "'t' with `test.model: mixed` (a resampling method resamples the per-seed "
                "differences, slopes or levels, which needs no model; use `model: ols`)",
                method,
            )

    def _achieving(self, hf: HypothesisFile) -> set[str]:
        """Regularizers some condition switches on: their achieved metric is a column."""
        return {
            name
            for c in expand(hf.hypothesis.population)
            for name, r in zip(
                c.population.training.blocks(), c.population.training.regularizers(), strict=True
            )
            if r.active and r.metric
        }

    def replicate_evidence(
        self, hf: HypothesisFile, data: Any, rep: Any
    ) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
        """One trained model's outcomes: its rows, and the details some outcomes record."""
        named = self.named_outcomes()
        several = len(named) > 1
        cond = {c.name: c for c in expand(hf.hypothesis.population)}[rep.condition]
        trained = TrainedModel(rep.model, cond.population, data, rep.seed)
        achieved = _achieved(rep, trained, self._achieving(hf))
        rows: list[dict[str, Any]] = []
        details: list[dict[str, Any]] = []
        for part in named:
            # An outcome read at a checkpoint measures the model as it was then.
            at = rep.at_epoch(part.outcome.at_epoch)
            read = TrainedModel(at.model, cond.population, data, rep.seed)
            found = part.outcome.details(read) or {}
            if found:
                details.append(
                    {"outcome": part.name, "condition": rep.condition, "seed": rep.seed, **found}
                )
            rows.append(
                {
                    "part": rep.condition,
                    "seed": rep.seed,
                    "statistic": found["value"] if found else part.outcome.compute(read),
                    **({"outcome": part.name} if several else {}),
                    # of the model the outcome read: the checkpoint, for one read at_epoch
                    "test_accuracy": at.test_accuracy,
                    **achieved,
                    "train_loss": at.train_loss,
                }
            )
        return rows, details

    def pooled_evidence(
        self,
        hf: HypothesisFile,
        data: Any,
        reps: list[Any],
        results: list[tuple[list[dict[str, Any]], list[dict[str, Any]]]],
    ) -> Evidence:
        """Outcomes per trained model; contrasts or a trend across conditions."""
        hyp = hf.hypothesis
        test = self
        conditions = expand(hyp.population)
        named = test.named_outcomes()
        several = len(named) > 1
        rows = [row for rep_rows, _ in results for row in rep_rows]
        details = [d for _, rep_details in results for d in rep_details]
        replicates = pd.DataFrame(rows)
        n_seeds = replicates["seed"].nunique()
        parts: list[Part] = []
        notes: list[str] = []
        methods: list[str] = []
        owners: list[str] = []  # the outcome each part belongs to
        for op, (compare, loc) in zip(named, test.comparisons(), strict=True):
            sub = replicates[replicates["outcome"] == op.name] if several else replicates
            table = sub.rename(columns={"part": "condition", "statistic": "y"})[
                ["condition", "seed", "y"]
            ]
            try:
                fit, part_keys = compare.fit(hf, table, conditions, loc, test.model)
            except ValueError as exc:
                raise FalsifyError(f"{hf.path}: no verdict for {op.name}: {exc}.") from None
            notes += [f"{op.name}: {n}" if several else n for n in fit.notes]
            methods.append(fit.method)
            if op.direction is not None and op.direction != hyp.prediction.direction:
                notes.append(
                    f"The parts of {op.name} predict a {op.direction} effect (the rule above, "
                    "mirrored)."
                )
            owners += [op.name] * len(part_keys)
            parts += [
                Part(
                    name=f"{op.name}: {name}" if several else name,
                    estimate=fit.estimates[key],
                    n_replicates=n_seeds,
                    effect_size=fit.effect_sizes.get(key, float("nan")),
                    effect_size_kind=compare.effect_size_kind,
                    method=fit.method,
                    direction=op.direction,
                    values=tuple(fit.values[key]) if key in fit.values else None,
                    standardized=True,
                )
                for name, key in part_keys
            ]
        settings = pd.DataFrame(
            [
                {"condition": c.name, **{k: format_value(v) for k, v in c.settings}}
                for c in conditions
            ]
        )
        tidy = replicates.rename(columns={"part": "condition", "statistic": "value"}).merge(
            settings, on="condition", how="left"
        )
        if details:
            extra = pd.DataFrame(details).drop(columns="value")
            keys = ["condition", "seed"] + (["outcome"] if several else [])
            tidy = tidy.merge(
                extra if several else extra.drop(columns="outcome"), on=keys, how="left"
            )
        if not several:
            tidy = tidy.rename(columns={"value": "outcome"})
        outcome_labels = {op.name: op.outcome.described() for op in named}
        label = named[0].outcome.described() if not several else "outcome"
        # Each outcome's statistic, by its own comparison (a difference, a slope, a level).
        kinds = [compare.wording for compare, _ in test.comparisons()]
        own = {
            op.name: f"{k} {outcome_labels[op.name]}" for op, k in zip(named, kinds, strict=True)
        }
        mixed = len(set(kinds)) > 1
        statistic = (
            " and ".join(f"{stat} ({name})" for name, stat in own.items())
            if mixed
            else f"{kinds[0]} {label}"
        )
        # With mixed comparisons the reading names each part's own statistic.
        part_statistics = {
            f"statistic: {part.name}": own[name]
            for part, name in zip(parts, owners, strict=True)
            if mixed
        }
        labels = {
            "statistic": statistic,
            **part_statistics,
            "replicate_statistic": f"outcome: {label}" if not several else "value",
            "part": "condition",
        }
        level = 1 - 2 * hyp.prediction.alpha
        notes.append(
            "replicates in the result table counts seeds per condition: each comparison pairs the "
            "models of its conditions that share a seed."
        )
        order = [c.name for c in conditions]
        return Evidence(
            parts=parts,
            replicates=replicates,
            tidy=tidy,
            tidy_grain="replicate (condition × seed)" + (" × outcome" if several else ""),
            labels=labels,
            figures={
                "": Figure(self.figure, (replicates, order, outcome_labels, level)),
                **_detail_figures(named, details, order, level),
            },
            notes=list(dict.fromkeys(notes)),
        )


def _achieved(rep: Any, trained: TrainedModel, achieving: set[str]) -> dict[str, float]:
    """What each regularizer block in ``achieving`` achieved in this model: as recorded at
    training time, else computed (e.g. for the condition with the term off); a model with no
    unit layers has none."""
    training = trained.population.training
    out: dict[str, float] = {}
    for name in training.blocks():
        if name not in achieving:
            continue
        block = getattr(training, name)
        if block.metric in rep.metrics:
            out[block.metric] = rep.metrics[block.metric]
        else:
            x_test, y_test = trained.split("test")
            out |= block.achieved(rep.model, x_test, y_test, trained.data.n_classes)
    return out


def _detail_figures(
    named: list[OutcomePart], details: list[dict[str, Any]], order: list[str], level: float
) -> dict[str, Figure]:
    """One extra figure per outcome part whose kind draws its details (e.g. baselines)."""
    out: dict[str, Figure] = {}
    if not details:
        return out
    table = pd.DataFrame(details)
    drawn: set[tuple[str, str]] = set()
    for op in named:
        draw = op.outcome.detail_figure
        rows = table[table["outcome"] == op.name]
        # outcomes that differ only in how they use the same details (e.g. clusterability
        # against one baseline or another) share one figure
        same = (draw, rows.drop(columns=["outcome", "value"]).to_csv(index=False))
        if draw and len(rows) and same not in drawn:
            drawn.add(same)
            suffix = "-" + re.sub(r"[^A-Za-z0-9]+", "-", op.name).strip("-").lower()
            out[suffix] = Figure(draw, (rows, order, op.outcome, level))
    return out
