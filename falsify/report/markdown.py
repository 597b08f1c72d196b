"""The Markdown report of one hypothesis (PRODUCT.md §9): verdict and plain reading first."""

from __future__ import annotations

import json
import math
from typing import Any

import pandas as pd

from falsify.runner.outcome import Outcome
from falsify.stats.decide import ADJUSTMENT_NAMES
from falsify.stats.power import planned_by
from falsify.stats.verdict import Verdict

__all__ = ["decision_rule", "fmt", "fmt_ci", "fmt_p", "hypothesis_p", "render_report", "summary"]

_DIRECTION = {
    "positive": "positive (θ > 0)",
    "negative": "negative (θ < 0)",
    "none": "no meaningful effect (|θ| < δ)",
}


def fmt(v: Any, digits: int = 3) -> str:
    if v is None or (isinstance(v, float) and math.isnan(v)):
        return "–"
    if isinstance(v, float):
        text = f"{v:.{digits}f}"
        # A value that rounds to zero is 0, whatever its sign: no "-0.000" in a table.
        return text[1:] if text.startswith("-") and float(text) == 0 else text
    return str(v)


def fmt_p(p: float) -> str:
    if p is None or math.isnan(p):
        return "–"
    return "< 0.001" if p < 0.001 else f"{p:.3f}"


def fmt_ci(low: float, high: float) -> str:
    """A CI as ``[low, high]``, each end by :func:`fmt` ("–" when undefined)."""
    return f"[{fmt(low)}, {fmt(high)}]"


def decision_rule(direction: str, sesoi: float, alpha: float) -> str:
    level = f"{100 * (1 - 2 * alpha):g}%"
    if direction == "none":
        return (
            f"SUPPORTED when the {level} CI lies inside (−{sesoi:g}, {sesoi:g}) (equivalence, "
            f"TOST at α = {alpha:g}); FALSIFIED when it lies wholly above {sesoi:g} or below "
            f"−{sesoi:g}; INCONCLUSIVE otherwise."
        )
    if direction == "positive":
        return (
            f"SUPPORTED when the {level} CI lies above 0 and its upper end reaches δ = {sesoi:g}; "
            f"FALSIFIED when its upper end is below δ = {sesoi:g} (an effect as large as the "
            "smallest one of interest is ruled out); INCONCLUSIVE otherwise."
        )
    return (
        f"SUPPORTED when the {level} CI lies below 0 and its lower end reaches −δ = −{sesoi:g}; "
        f"FALSIFIED when its lower end is above −{sesoi:g}; INCONCLUSIVE otherwise."
    )


def _reading(o: Outcome) -> str:
    """One plain sentence: what the verdict means for the claim, with the deciding numbers."""
    pred = o.file.hypothesis.prediction
    stat = o.labels.get("statistic", "estimate")
    level = f"{100 * (1 - 2 * pred.alpha):g}%"
    deciding = o.parts[o.parts["verdict"] == o.verdict.value]
    if deciding.empty:
        deciding = o.parts
    nums = "; ".join(
        f"{r.part}: {o.labels.get(f'statistic: {r.part}', stat)} = {fmt(r.estimate)}, "
        f"{level} CI {fmt_ci(r.ci_low, r.ci_high)}"
        for r in deciding.itertuples()
    )
    # Every trained model counts (a grid trains several per seed); parts count seeds.
    n = int(o.provenance.get("replicates") or o.parts["n_replicates"].max())
    n -= int(o.provenance.get("excluded", 0))  # those the inclusion rule left out
    if o.verdict is Verdict.SUPPORTED:
        if pred.direction == "none":
            return f"Across {n} trained models the effect is negligible, as claimed ({nums})."
        return (
            f"Across {n} trained models the effect goes the predicted way and an effect of at "
            f"least δ = {pred.sesoi:g} is not ruled out ({nums})."
        )
    if o.verdict is Verdict.FALSIFIED:
        if pred.direction == "none":
            return f"Across {n} trained models there is a meaningful effect, against the claim ({nums})."
        return (
            f"Across {n} trained models an effect as large as δ = {pred.sesoi:g} in the "
            f"predicted direction is ruled out ({nums})."
        )
    return f"The {n} trained models cannot decide the claim: the CI is too wide ({nums})."


def _table(df: pd.DataFrame, columns: dict[str, str], digits: int = 3) -> str:
    head = "| " + " | ".join(columns.values()) + " |"
    sep = "|" + "|".join("---" for _ in columns) + "|"
    rows = []
    for rec in df.to_dict("records"):
        cells = []
        for col in columns:
            v = rec[col]
            cells.append(fmt_p(v) if col.startswith("p_") else fmt(v, digits))
        rows.append("| " + " | ".join(cells) + " |")
    return "\n".join([head, sep, *rows])


def _has_g(parts: pd.DataFrame) -> bool:
    """Whether some part's effect is a standardized mean difference (so has a Hedges' g)."""
    return "hedges_g" in parts and bool(parts["hedges_g"].notna().any())


def _preregistration(o: Outcome) -> list[str]:
    pre = o.preregistration
    if pre is None:
        return []
    out = [f"Pre-registration: **{pre.status}** ({pre.detail}).", ""]
    if pre.changed:
        out += ["| field | locked | in this run |", "|---|---|---|"]
        out += [f"| `{k}` | {old!r} | {new!r} |" for k, old, new in pre.changed]
        out.append("")
    return out


def _git_line(git: dict[str, Any] | None) -> str:
    if not git:
        return "the hypothesis file is not in a git repository (or git is not installed)"
    tree = "with uncommitted changes" if git["dirty"] else "clean"
    return f"git commit `{git['commit']}` ({tree}; the file is {git['file']})"


def render_report(o: Outcome, figures: list[str], csv_name: str) -> str:
    hyp = o.file.hypothesis
    pred = hyp.prediction
    prov = o.provenance
    level = f"{100 * (1 - 2 * pred.alpha):g}%"
    out: list[str] = [f"# {hyp.id}: {o.verdict.value}", ""]
    out += [f"**{o.verdict.value}.** {_reading(o)}", ""]
    if prov.get("overrides"):
        out += [
            f"> Run with overrides {', '.join(f'`{s}`' for s in prov['overrides'])}: "
            "not the file as written.",
            "",
        ]
    out += _preregistration(o)
    out += _screening_flags(o)
    out += ["## Claim", "", hyp.claim, ""]
    if hyp.source is not None:
        url = f" <{hyp.source.url}>" if hyp.source.url else ""
        out.append(f"Source: {hyp.source.citation}{url}")
        if hyp.source.finding:
            out.append(f"(what the source found, as context only: {hyp.source.finding})")
        out.append("")
    control = hyp.population.training.control
    if control != "none":
        out += [
            f"Population: the `{control}` control of this recipe (`training.control`, "
            "docs/methods.md).",
            "",
        ]
    out += ["## Decision rule", ""]
    out.append(
        f"Predicted direction: {_DIRECTION[pred.direction]} of the {o.labels.get('statistic')}; "
        f"smallest effect size of interest δ = {pred.sesoi:g}; α = {pred.alpha:g}. "
        + decision_rule(pred.direction, pred.sesoi, pred.alpha)
    )
    if len(o.parts) > 1:
        combine = (
            "every part must be SUPPORTED, and one FALSIFIED part falsifies the claim"
            if pred.combine == "all"
            else "one SUPPORTED part supports the claim; every part must be FALSIFIED to falsify"
        )
        out.append("")
        out.append(
            f"{len(o.parts)} parts, combined by `{pred.combine}` ({combine}). "
            + _adjustment_note(pred.combine, pred.adjust)
            + f" The CIs shown are the unadjusted {level} intervals."
        )
    out += ["", "## Result", ""]
    # Parts that predict different directions (e.g. one outcome to fall, another to rise)
    # say which one each predicts.
    mixed = "direction" in o.parts and o.parts["direction"].nunique() > 1
    out.append(
        _table(
            o.parts,
            {
                "part": "part",
                **({"direction": "predicted"} if mixed else {}),
                "estimate": "estimate",
                "ci_low": f"{level} CI low",
                "ci_high": f"{level} CI high",
                "p_support": "p (support)",
                "p_support_adj": "p adj (support)",
                "p_falsify": "p (falsify)",
                "p_falsify_adj": "p adj (falsify)",
                "n_replicates": "replicates",
                "n_units": "units",
                "effect_size": "standardized effect",
                **({"hedges_g": "Hedges' g"} if _has_g(o.parts) else {}),
                "verdict": "verdict",
            },
        )
    )
    out.append("")
    kinds = ", ".join(dict.fromkeys(o.parts["effect_size_kind"]))
    methods = "; ".join(dict.fromkeys(o.parts["method"]))
    out.append(f"Standardized effect size: {kinds}. Method: {methods}.")
    if _has_g(o.parts):
        out.append(
            "Hedges' g is the standardized effect with the small-sample correction: "
            "g = d · J(n − 1), J(m) = Γ(m/2) / (√(m/2) · Γ((m − 1)/2)) (Hedges 1981; "
            "docs/verdicts.md)."
        )
    if pred.method != "t" and "inference" in o.parts:
        inference = "; ".join(dict.fromkeys(o.parts["inference"]))
        out.append(
            f"CI and p-values (`prediction.method: {pred.method}`): {inference}, in place of "
            "the t reference of the method above."
        )
    directions = set(o.parts["direction"]) if "direction" in o.parts else {pred.direction}
    out.append(" ".join(text for d, text in _P_VALUES.items() if d in directions))
    if "replicates_needed" in o.parts:
        for r in o.parts.itertuples():
            if r.verdict == Verdict.INCONCLUSIVE.value:
                need = r.replicates_needed
                out.append("")
                if need is None or (isinstance(need, float) and math.isnan(need)):
                    out.append(
                        f"Power note ({r.part}): the observed estimate sits on a decision "
                        "boundary; no feasible number of replicates is likely to decide it."
                    )
                else:
                    out.append(
                        f"Power note ({r.part}): with the observed estimate and spread, about "
                        f"{int(need)} replicates would give a conclusive verdict with 80% power "
                        f"(`falsify run --seeds {int(need)}` runs seeds 0..{int(need) - 1} and "
                        "reuses those already cached); planned for `prediction.method: "
                        f"{pred.method}` by {planned_by(pred.method)}."
                    )
    out += ["", "## Per replicate", ""]
    rep_cols = {
        "part": o.labels.get("part", "part"),
        "seed": "seed",
        "statistic": o.labels.get("replicate_statistic", o.labels.get("statistic", "statistic")),
    }
    rep_cols |= {c: c.replace("_", " ") for c in o.replicates.columns if c not in rep_cols}
    out.append(_table(o.replicates, rep_cols))
    out += _screening_section(o)
    out += ["", "## Figures", ""]
    out += [f"![{name}]({name})" for name in figures]
    parts_csv = csv_name.replace(".csv", ".parts.csv")
    out += [
        "",
        f"Tidy data: [`{csv_name}`]({csv_name}) (one row per {o.tidy_grain}); the result "
        f"table with effect sizes: [`{parts_csv}`]({parts_csv}).",
        "",
    ]
    if o.notes:
        out += ["## Notes", ""]
        out += [f"- {n}" for n in o.notes]
        out.append("")
    out += ["## Provenance", ""]
    versions = ", ".join(f"{k} {v}" for k, v in prov.get("versions", {}).items())
    out += [
        f"- Hypothesis file: `{prov.get('file')}` (sha256 `{prov.get('file_sha256', '')[:16]}…`)",
        f"- falsify {prov.get('falsify_version', 'unknown')}; {_git_line(prov.get('git'))}",
        f"- Seeds: {prov.get('seeds')}",
        f"- Device: {prov.get('device')} ({prov.get('torch_threads')} CPU threads); training "
        f"jobs: {prov.get('jobs', 1)} ({prov.get('executor', 'in-process')})",
        f"- Replicates: {prov.get('replicates')}, of which {prov.get('cache_hits')} loaded "
        "from the cache",
        *(
            ["- Data: streamed in batches (`population.data.stream`), never held whole"]
            if prov.get("streamed")
            else []
        ),
        *(
            [f"- Damaged cache entries retrained: {'; '.join(prov['cache_repairs'])}"]
            if prov.get("cache_repairs")
            else []
        ),
        f"- Wall time: {prov.get('wall_seconds', 0.0):.1f} s",
        f"- Versions: {versions}",
        f"- Platform: {prov.get('platform')}",
        "",
    ]
    return "\n".join(out)


def _who(rows: pd.DataFrame) -> str:
    return ", ".join(
        (f"{r.condition} / " if r.condition else "") + f"seed {r.seed}" for r in rows.itertuples()
    )


def _screening_flags(o: Outcome) -> list[str]:
    """Warnings under the reading: replicates left out by the inclusion rule, and replicates
    at chance level, which a rule-less run still analyses (docs/reports.md)."""
    from falsify.runner.replicates import CHANCE_ALPHA  # here: the index needs no torch

    s = o.screening
    if s.empty:
        return []
    out = []
    left = s[~s["included"]]
    if len(left):
        rule = o.file.hypothesis.population.include.model_dump(exclude_defaults=True)
        flow = ", ".join(f"{k}: {json.dumps(v)}" for k, v in rule.items())
        out.append(
            f"> **{len(left)} of {len(s)} replicates left out** by the pre-registered rule "
            f"`population.include: {{{flow}}}`; they are in no statistic (listed under "
            '"Replicate screening").'
        )
    chance = s[s["at_chance"]]
    if len(chance):
        kept = int(chance["included"].sum())
        out.append(
            f"> **{len(chance)} of {len(s)} replicates at chance level**: test accuracy not "
            f"above the majority-class rate {fmt(float(s['chance'].iloc[0]))} (one-sided "
            f"binomial test, p ≥ {CHANCE_ALPHA:g}): {_who(chance)}. "
            + (
                f"{kept} of them are in the statistics."
                if kept
                else "None of them is in the statistics."
            )
        )
    return [line for flag in out for line in (flag, "")]


def _screening_section(o: Outcome) -> list[str]:
    """The replicates left out or at chance, one row each, with the reason."""
    from falsify.runner.replicates import CHANCE_ALPHA

    s = o.screening
    if s.empty:
        return []
    shown = s[~s["included"] | s["at_chance"]]
    if shown.empty:
        return []
    cols = {
        "test_accuracy": "test accuracy",
        "chance": "chance",
        "p_above_chance": "p (above chance)",
        "included": "included",
        "reason": "reason left out",
    }
    cols = ({"condition": "condition"} if s["condition"].any() else {}) | {"seed": "seed"} | cols
    shown = shown.assign(included=shown["included"].map({True: "yes", False: "no"}))
    return [
        "",
        "## Replicate screening",
        "",
        "Replicates left out by `population.include`, or at chance level (test accuracy not "
        "above the majority-class rate of the test labels by a one-sided binomial test at "
        f"{CHANCE_ALPHA:g}); every other replicate is above chance and included.",
        "",
        _table(shown, cols),
    ]


# What the two p-values test (falsify/stats/verdict.py p_values), keyed by the direction.
_P_VALUES = {
    "positive": "For a `positive` part, p (support) tests the null that the claim's effect is "
    "absent (θ ≤ 0); p (falsify) tests the null that an effect of at least δ is present "
    "(θ ≥ δ).",
    "negative": "For a `negative` part, p (support) tests the null that the claim's effect is "
    "absent (θ ≥ 0); p (falsify) tests the null that a fall of at least δ is present "
    "(θ ≤ −δ).",
    "none": "For a `none` (no meaningful effect) part, p (support) is the equivalence test "
    "(TOST) that the effect lies inside ±δ (its null: |θ| ≥ δ); p (falsify) is the "
    "minimum-effect test that it lies outside ±δ (its null: |θ| ≤ δ).",
}


def _adjustment_note(combine: str, adjust: str) -> str:
    """Which p-value of each part is adjusted within the hypothesis, and why (verdicts.md)."""
    if adjust == "none":
        return "No p-value is adjusted across the parts (`adjust: none`)."
    adjusted = f"{ADJUSTMENT_NAMES[adjust]}-adjusted (`adjust: {adjust}`)"
    if combine == "all":
        return (
            f"p (falsify) is {adjusted} across the parts, since one FALSIFIED part "
            "falsifies; p (support) is not, since SUPPORTED needs every part at α (an "
            "intersection–union test, Berger 1982)."
        )
    return (
        f"p (support) is {adjusted} across the parts, since one SUPPORTED part "
        "supports; p (falsify) is not, since FALSIFIED needs every part at α (an "
        "intersection–union test, Berger 1982)."
    )


def hypothesis_p(parts: pd.DataFrame, combine: str) -> float:
    """One p-value for the whole claim, from the parts' p (support) as the verdict used them.

    ``all`` is an intersection–union test (every part must reject): its p is the largest
    unadjusted part p. ``any`` rejects when one part does; with adjusted parts its p is the
    smallest adjusted one.
    """
    p = parts["p_support_adj"]
    return float(p.max() if combine == "all" else p.min())


def summary(o: Outcome) -> dict[str, Any]:
    """The JSON record ``index.md`` is built from."""
    hyp = o.file.hypothesis
    return {
        "id": hyp.id,
        "claim": hyp.claim,
        "shape": hyp.test.kind,
        "verdict": o.verdict.value,
        "direction": hyp.prediction.direction,
        "sesoi": hyp.prediction.sesoi,
        "alpha": hyp.prediction.alpha,
        "parts": o.parts[
            ["part", "estimate", "ci_low", "ci_high", "p_support", "p_support_adj", "verdict"]
        ].to_dict("records"),
        "p_support_hypothesis": hypothesis_p(o.parts, hyp.prediction.combine),
        "n_replicates": int(o.parts["n_replicates"].max()),
        "overrides": o.provenance.get("overrides", []),
        "combine": hyp.prediction.combine,
        "preregistration": o.preregistration.status if o.preregistration else None,
        "file": o.provenance.get("file"),
        "falsify_version": o.provenance.get("falsify_version"),
        "git": o.provenance.get("git"),
        "wall_seconds": o.provenance.get("wall_seconds"),
    }
