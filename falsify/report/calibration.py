"""``reports/calibration.md`` and its power-curve figure, from :func:`falsify.stats.calibrate`."""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from falsify._io import atomic_write, atomic_write_text
from falsify.stats.calibration import Simulator

__all__ = ["format_parts_table", "format_table", "write_calibration"]


def format_table(table: pd.DataFrame) -> str:
    """The calibration table as Markdown (also what `falsify calibrate` prints)."""
    power_cols = [c for c in table.columns if c.startswith("power_at_")]
    head = ["shape", "method", "k", "SUPPORTED at θ=0", "FALSIFIED at θ=δ"]
    head += [
        c.removeprefix("power_at_").replace("_sesoi", "δ").replace("_", " ") for c in power_cols
    ]
    head.append("calibrated")
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for r in table.to_dict("records"):
        cells = [
            r["shape"],
            r["method"]
            + ("" if r["offered"] or "not offered" in r["method"] else " (not offered)"),
            str(r["replicates"]),
            f"{r['supported_under_null']:.3f}",
            f"{r['falsified_at_sesoi']:.3f}",
            *(f"{r[c]:.3f}" for c in power_cols),
            "yes" if r["calibrated"] else "**no**",
        ]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def format_parts_table(table: pd.DataFrame) -> str:
    """The multi-part calibration of :func:`falsify.stats.calibration_parts.calibrate_parts`."""
    power_cols = [c for c in table.columns if c.startswith("power_at_")]
    head = ["combine", "p-values adjusted", "k", "SUPPORTED, LF null", "FALSIFIED, LF at δ"]
    head += [c.removeprefix("power_at_").replace("_sesoi", "δ") for c in power_cols]
    head.append("calibrated")
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for r in table.to_dict("records"):
        cells = [
            r["combine"],
            r["rule"],
            str(r["replicates"]),
            f"{r['supported_under_null']:.3f}",
            f"{r['falsified_at_sesoi']:.3f}",
            *(f"{r[c]:.3f}" for c in power_cols),
            "yes" if r["calibrated"] else "**no**",
        ]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def _parts_section(table: pd.DataFrame) -> list[str]:
    a = table.attrs
    return [
        "## Several parts: the adjustment matched to `combine`",
        "",
        f"{int(table['parts'].iloc[0])} parts, each simulated as {a['method']}; "
        f"`adjust: {a['adjust']}`. Under `combine: all` p_support is unadjusted (an "
        "intersection–union test, Berger 1982) and p_falsify is adjusted; under `any` the "
        "reverse. The former rule adjusted both; the same simulated studies are decided by both.",
        "",
        "- SUPPORTED, LF null: false support at the least-favourable null (`all`: one part at "
        "θ = 0, the others at 10δ; `any`: every part at θ = 0); must be ≤ α.",
        "- FALSIFIED, LF at δ: false falsification at the least-favourable configuration "
        "(`all`: every part at δ; `any`: one part at δ, the others at −10δ); must be ≤ α.",
        "- mδ: under `all`, P(SUPPORTED) with every part at θ = mδ; under `any`, P(FALSIFIED) "
        "with every part at θ = δ − mδ.",
        "",
        format_parts_table(table),
        "",
    ]


def _figure(table: pd.DataFrame, path: Path) -> None:
    from matplotlib.figure import Figure

    power_cols = [c for c in table.columns if c.startswith("power_at_")]
    xs = [0.0] + [float(c.split("_")[2]) for c in power_cols]
    groups = list(dict.fromkeys(zip(table["shape"], table["method"], strict=True)))
    cols = min(4, len(groups))
    rows = -(-len(groups) // cols)
    fig = Figure(figsize=(4.2 * cols, 3.6 * rows))
    axes = fig.subplots(rows, cols, squeeze=False)
    alpha = table.attrs.get("alpha", 0.05)
    for ax in axes.flat[len(groups) :]:
        ax.set_visible(False)
    for ax, (shape, method) in zip(axes.flat, groups, strict=False):
        sub = table[(table["shape"] == shape) & (table["method"] == method)]
        for r in sub.to_dict("records"):
            ys = [r["supported_under_null"]] + [r[c] for c in power_cols]
            ax.plot(xs, ys, marker="o", label=f"k = {r['replicates']}")
        ax.axhline(alpha, color="0.5", ls="--", lw=0.8)
        ax.set_ylim(0, 1.02)
        ax.set_title(f"{shape}\n{method}", fontsize=9)
        ax.set_xlabel("true effect / SESOI")
    for row in axes:
        row[0].set_ylabel("P(SUPPORTED)")
    axes.flat[len(groups) - 1].legend(fontsize=8, frameon=False)
    fig.tight_layout()
    fig.savefig(path, dpi=110)


def write_calibration(
    table: pd.DataFrame,
    simulators: list[Simulator],
    out_dir: Path,
    parts: pd.DataFrame | None = None,
) -> Path:
    """Write ``calibration.md`` and ``calibration.png`` into ``out_dir`` (each by rename).

    ``parts``: the multi-part table of ``calibrate_parts``, written as its own section.
    """
    out_dir.mkdir(parents=True, exist_ok=True)
    alpha, n, se = table.attrs["alpha"], table.attrs["n_sims"], table.attrs["mc_se"]
    models = {f"{s.shape}, {s.method}": s.model for s in simulators}
    text = [
        "# Calibration of the verdict rules",
        "",
        f"{n} simulated studies per row, α = {alpha:g} (Monte-Carlo standard error of a rate "
        f"near α: {se:.4f}). Every claim is simulated as `positive` with SESOI δ; the product's "
        "own pooling and verdict functions decide each simulated study.",
        "",
        "- SUPPORTED at θ=0: false support under a true null; must be ≤ α.",
        "- FALSIFIED at θ=δ: false falsification when the true effect equals the SESOI; must be ≤ α.",
        "- power at mδ: P(SUPPORTED) when the true effect is m·δ.",
        f"- calibrated: both error rates ≤ α + 3 Monte-Carlo SE ({alpha + 3 * se:.3f}).",
        "- Methods marked (not offered) are shown only to justify the choice of method, or at a "
        "replicate count the product refuses for that `prediction.method` (the BCa bootstrap "
        "below 30 replicates; the sign-flip test where its smallest p, 2^-k, is not below α).",
        "- BCa bootstrap rows are approximate: their error rates come near α only from about 30 "
        "replicates (docs/verdicts.md), so they are shown and not required to be calibrated.",
        "- `prediction.method` (docs/methods.md): the t rows are `t`; BCa bootstrap rows "
        "`bootstrap`; sign-flip rows `permutation`; each resamples the same per-replicate "
        "values the t row pools.",
        "- Rows marked stress simulate data outside the method's assumptions (strongly skewed "
        "per-replicate effects); they show where a verdict needs care and are not required "
        "to be calibrated.",
        "",
        format_table(table),
        "",
        "![power curves](calibration.png)",
        "",
        *(_parts_section(parts) if parts is not None else []),
        "## Simulated data",
        "",
        *(f"- {shape}: {model}." for shape, model in models.items()),
        "",
    ]
    atomic_write(out_dir / "calibration.png", lambda p: _figure(table, p))
    atomic_write_text(out_dir / "calibration.md", "\n".join(text))
    return out_dir / "calibration.md"
