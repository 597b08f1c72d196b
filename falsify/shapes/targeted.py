"""The targeted-vs-control shape (PRODUCT.md §3): ablate the k units ranked highest by a
score vs k random units of the same layer, paired within each model.

The random groups match the targeted group's size; with ``random: {match: activation}`` they
also match its distribution over strata of mean activation (docs/modularity-and-attribution.md,
"Random groups matched on activation")."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any, ClassVar, Literal

import numpy as np
import pandas as pd
import torch
from pydantic import Field, field_validator
from torch import nn
from torch.utils.data import Dataset as TorchDataset

from falsify.data.stream import first_inputs, on_device
from falsify.errors import LocatedError
from falsify.hypothesis.kinds import ShapeKind, UnitMeasure, UnitMeasureKind, register
from falsify.hypothesis.types import Frozen, Layers, Seed, Split
from falsify.hypothesis.units import Fill
from falsify.interventions import ablation_effects, random_masks, resolve_k, top_k_masks
from falsify.interventions.groups import activation_strata, matched_random_masks
from falsify.measures.activation import mean_activations
from falsify.measures.selectivity import unit_activations
from falsify.shapes.base import Evidence, Figure, require_replicates
from falsify.stats import Part
from falsify.stats.paired import cohens_dz, paired_t

if TYPE_CHECKING:
    from falsify.hypothesis.loader import HypothesisFile

__all__ = [
    "RandomGroups",
    "TargetedTest",
    "control_generator",
    "paired_differences",
    "pooled_parts",
    "targeted_vs_random",
]

_METRIC_LABELS = {"accuracy_drop": "accuracy drop", "loss_increase": "loss increase"}
_FILL_WORDS = {
    "zero": "0",
    "mean": "their mean over the split",
    "resample": "their value on another input of the split (resample, seed 0)",
}


def control_generator(control_seed: int, replicate_seed: int, layer_index: int) -> torch.Generator:
    """The generator of one replicate's and layer's random groups (independent streams)."""
    state = np.random.SeedSequence([control_seed, replicate_seed, layer_index]).generate_state(2)
    return torch.Generator().manual_seed(int(state[0]) << 32 | int(state[1]))


def targeted_vs_random(
    model: nn.Module,
    layer: str,
    x: torch.Tensor,
    y: torch.Tensor,
    scores: Mapping[str, torch.Tensor],
    ks: Sequence[int],
    draws: int,
    generator: torch.Generator,
    value: Fill = "zero",
    metric: Literal["accuracy_drop", "loss_increase"] = "accuracy_drop",
    strata: torch.Tensor | None = None,
) -> pd.DataFrame:
    """Ablation effects of targeted and random groups in one model: one row per group.

    ``scores``: name → per-unit score ``[units]``; the targeted group of size k is the top k
    units by that score. For each k, ``draws`` random groups of k units are drawn from
    ``generator`` and shared by every score; with ``strata`` (a stratum per unit ``[units]``,
    :func:`~falsify.interventions.groups.activation_strata`) each score's targeted group gets
    its own ``draws`` groups matched to it stratum by stratum, and their rows carry the score.
    Columns: score (empty for random groups shared by every score), k, group (``targeted`` or
    ``random``), draw, effect. Every group is evaluated in one sweep of the batched ablation
    engine.
    """
    n_units = next(iter(scores.values())).shape[0]
    blocks, rows = [], []
    for name, s in scores.items():
        blocks.append(top_k_masks(s, ks).cpu())
        rows += [{"score": name, "k": k, "group": "targeted", "draw": 0} for k in ks]
    if strata is None:
        for k in ks:
            blocks.append(random_masks(n_units, k, draws, generator))
            rows += [{"score": "", "k": k, "group": "random", "draw": d} for d in range(draws)]
    else:
        for name, s in scores.items():
            for k, target in zip(ks, top_k_masks(s, ks).cpu(), strict=True):
                blocks.append(matched_random_masks(strata, target, draws, generator))
                rows += [
                    {"score": name, "k": k, "group": "random", "draw": d} for d in range(draws)
                ]
    masks = torch.cat(blocks).to(next(model.parameters()).device)
    effects = ablation_effects(model, layer, x, y, masks, value=value, metric=metric)
    out = pd.DataFrame(rows)
    out["effect"] = effects.cpu().numpy().astype(float)
    return out


def paired_differences(groups: pd.DataFrame) -> pd.DataFrame:
    """From :func:`targeted_vs_random` rows to one row per score × k: targeted, random, d."""
    random = groups[groups["group"] == "random"]
    # Random groups matched to one score's targeted group carry that score; shared ones do not.
    keys = ["score", "k"] if (random["score"] != "").any() else ["k"]
    rand = random.groupby(keys)["effect"]
    control = pd.DataFrame({"random_mean": rand.mean(), "random_sd": rand.std(ddof=1)})
    tgt = groups[groups["group"] == "targeted"][["score", "k", "effect"]]
    out = tgt.rename(columns={"effect": "targeted"}).merge(control.reset_index(), on=keys)
    out["difference"] = out["targeted"] - out["random_mean"]
    return out


def pooled_parts(differences: pd.DataFrame, draws: int) -> list[Part]:
    """One :class:`Part` per ``part`` of ``differences`` (rows: replicate × part, with columns
    part, k, difference), pooled over replicates by a one-sample t, in order of appearance."""
    parts: list[Part] = []
    for name, sub in differences.groupby("part", sort=False):
        d = sub["difference"].to_numpy()
        require_replicates(str(name), len(d))
        est = paired_t(d)
        parts.append(
            Part(
                name=str(name),
                estimate=est,
                n_replicates=len(d),
                effect_size=cohens_dz(d),
                effect_size_kind="Cohen's d_z",
                method=f"per-replicate targeted − mean of {draws} random groups, "
                "one-sample t over replicates",
                n_units=int(sub["k"].iloc[0]),
                values=tuple(d),
                standardized=True,
            )
        )
    return parts


def _n_units(model: nn.Module, layer: str, x: torch.Tensor | TorchDataset) -> int:
    inputs = first_inputs(x, 2).to(next(model.parameters()).device)
    return int(unit_activations(model, layer, inputs).shape[1])


def _k_label(k: int | float, count: int) -> str:
    return f"{100 * k:g}% ({count} units)" if isinstance(k, float) else f"{count} units"


class RandomGroups(Frozen):
    """How the random comparison groups are drawn (docs/modularity-and-attribution.md).

    ``match: size`` (default): k units uniformly at random, shared by every score.
    ``match: activation``: also matched on activation magnitude: the layer's units are cut into
    ``strata`` equal-count strata by their mean activation on the split, and each draw takes,
    from every stratum, as many units as the score's targeted group has there.
    """

    match: Literal["size", "activation"] = "size"
    strata: int = Field(5, ge=2)


@register
class TargetedTest(ShapeKind):
    """Ablate the k units ranked highest by a score vs k random units (PRODUCT.md §3).

    Per replicate, layer, score and k: the effect of ablating the top-k units by the score,
    minus the mean effect of ``draws`` random groups of k units of the same layer. The
    differences are pooled over replicates by a one-sample t; every layer × score × k is one
    part of the hypothesis.
    """

    kind: Literal["targeted"]
    layers: Layers = Field(min_length=1)
    scores: tuple[UnitMeasure, ...]
    k: tuple[int | float, ...]
    draws: int = Field(20, ge=2)
    random: RandomGroups = RandomGroups()
    control_seed: Seed = 0
    value: Fill = "zero"
    metric: Literal["accuracy_drop", "loss_increase"] = "accuracy_drop"
    split: Split = "test"

    streams: ClassVar[bool] = True
    label: ClassVar[str] = "targeted vs control"
    docs: ClassVar[str] = "docs/verdicts.md"
    figure: ClassVar[str] = "targeted_curves"
    simulator: ClassVar[str] = "targeted-vs-control"
    example: ClassVar[dict[str, Any]] = {
        "layers": ["hidden1"],
        "scores": [{"kind": "class_selectivity"}],
        "k": [2],
        "draws": 3,
    }

    @field_validator("scores")
    @classmethod
    def _distinct_scores(cls, v: tuple[UnitMeasureKind, ...]) -> tuple[UnitMeasureKind, ...]:
        # Checked here rather than by min_length, which would add a second, misleading error
        # line whenever one score is invalid.
        if not v:
            raise ValueError("a list of at least one per-unit score")
        kinds = [s.kind for s in v]
        if len(set(kinds)) != len(kinds):
            raise ValueError(f"scores of distinct kinds (they name the parts), got {kinds}")
        return v

    @field_validator("k", mode="before")
    @classmethod
    def _counts_or_fractions(cls, v: object) -> object:
        items = v if isinstance(v, list | tuple) else [v]
        if not items:
            raise ValueError("a list of at least one k")
        for item in items:
            ok = (isinstance(item, int) and not isinstance(item, bool) and item >= 1) or (
                isinstance(item, float) and 0.0 < item < 1.0
            )
            if not ok:
                raise ValueError(
                    "a list of unit counts (integers ≥ 1) or fractions of the layer "
                    f"(0 < k < 1); {item!r} is neither"
                )
        if len(set(items)) != len(items):
            raise ValueError("a list of distinct k values")
        return tuple(items)

    def check(self, hf: HypothesisFile, model: nn.Module, data: Any) -> None:
        """The SESOI fits an accuracy difference; every k fits every named layer: 1 ≤ count <
        units, and distinct counts per layer; matching strata hold two units or more."""
        test = self
        if test.metric == "accuracy_drop" and hf.hypothesis.prediction.sesoi >= 1:
            raise LocatedError(
                ("prediction", "sesoi"),
                "below 1 (the effect is a difference of accuracy drops, in accuracy units)",
                hf.hypothesis.prediction.sesoi,
            )
        for layer in test.layers:
            n = _n_units(model, layer, data.split("test")[0])
            if test.random.match == "activation" and test.random.strata > n // 2:
                raise LocatedError(
                    ("test", "random", "strata"),
                    f"at most {n // 2} for layer {layer!r} of {n} units (a stratum of one unit "
                    "makes a matched random group copy the targeted one there)",
                    test.random.strata,
                )
            seen: dict[int, int | float] = {}
            for i, k in enumerate(test.k):
                count = resolve_k(k, n)
                if count >= n:
                    raise LocatedError(
                        ("test", "k", i),
                        f"fewer units than layer {layer!r} has ({n}; ablating all of them makes "
                        "the targeted and the random group the same)",
                        k,
                    )
                if count in seen:
                    raise LocatedError(
                        ("test", "k", i),
                        f"a k giving a group size not already given by {seen[count]!r} "
                        f"(both are {count} units of layer {layer!r})",
                        k,
                    )
                seen[count] = k

    def replicate_evidence(
        self, hf: HypothesisFile, data: Any, rep: Any
    ) -> list[tuple[pd.DataFrame, pd.DataFrame]]:
        """Per layer of one replicate: its groups' effects, and per score × k targeted −
        mean(random)."""
        test = self
        device = next(rep.model.parameters()).device
        x_in, y_in = data.split(test.split)
        x_in, y_in = on_device(x_in, device), y_in.to(device)
        out: list[tuple[pd.DataFrame, pd.DataFrame]] = []
        for li, layer in enumerate(test.layers):
            n_units = _n_units(rep.model, layer, x_in)
            counts = [resolve_k(k, n_units) for k in test.k]
            labels = {c: _k_label(k, c) for k, c in zip(test.k, counts, strict=True)}
            scores = {
                s.kind: s.measure(rep.model, layer, x_in, y_in, data.n_classes) for s in test.scores
            }
            strata = None
            if test.random.match == "activation":
                activation = mean_activations(rep.model, layer, x_in)
                strata = activation_strata(activation, test.random.strata)
            groups = targeted_vs_random(
                rep.model,
                layer,
                x_in,
                y_in,
                scores,
                counts,
                test.draws,
                control_generator(test.control_seed, rep.seed, li),
                test.value,
                test.metric,
                strata,
            )
            groups.insert(0, "layer", layer)
            groups.insert(0, "seed", rep.seed)
            diffs = paired_differences(groups)
            diffs["part"] = [
                f"{layer} · {s} · k = {labels[k]}"
                for s, k in zip(diffs["score"], diffs["k"], strict=True)
            ]
            diffs["seed"] = rep.seed
            diffs["layer"] = layer
            diffs["test_accuracy"] = rep.test_accuracy
            out.append((groups, diffs))
        return out

    def pooled_evidence(
        self,
        hf: HypothesisFile,
        data: Any,
        reps: list[Any],
        results: list[list[tuple[pd.DataFrame, pd.DataFrame]]],
    ) -> Evidence:
        """Every replicate's differences, pooled per layer × score × k."""
        test = self
        # layer-major, replicates in order within each layer
        group_rows = [r[li][0] for li in range(len(test.layers)) for r in results]
        rep_rows = [r[li][1] for li in range(len(test.layers)) for r in results]
        reps_df = pd.concat(rep_rows, ignore_index=True)
        parts = pooled_parts(reps_df, test.draws)
        metric = _METRIC_LABELS[test.metric]
        labels = {
            "statistic": f"targeted − random {metric}",
            "effect": f"{metric} when ablated",
            "k": "units ablated (k)",
        }
        replicates = reps_df[
            ["part", "seed", "difference", "targeted", "random_mean", "random_sd", "test_accuracy"]
        ].rename(columns={"difference": "statistic"})
        tidy = pd.concat(group_rows, ignore_index=True)
        shared = (
            "shared by every score"
            if test.random.match == "size"
            else f"per score, matched to its targeted group on mean activation over "
            f"{test.random.strata} equal-count strata of the layer's units"
        )
        notes = [
            f"Random groups: {test.draws} per replicate, layer and k, {shared}, drawn from "
            f"control_seed {test.control_seed} with the replicate's seed. Ablated units are set "
            f"to {_FILL_WORDS[test.value]}."
        ]
        return Evidence(
            parts=parts,
            replicates=replicates,
            tidy=tidy,
            tidy_grain="replicate × layer × ablated group",
            labels=labels,
            figures={
                "": Figure(self.figure, (tidy, labels, 1 - 2 * hf.hypothesis.prediction.alpha))
            },
            notes=notes,
        )
