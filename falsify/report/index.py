"""``reports/index.md``: the suite at a glance, one row per hypothesis part."""

from __future__ import annotations

from collections import Counter
from typing import Any

import numpy as np
from statsmodels.stats.multitest import multipletests

from falsify.report.markdown import fmt, fmt_ci, fmt_p

__all__ = ["render_index", "suite_adjusted"]

_VERDICTS = ("SUPPORTED", "FALSIFIED", "INCONCLUSIVE")


def suite_adjusted(summaries: list[dict[str, Any]]) -> list[float]:
    """Benjamini–Hochberg adjustment of each hypothesis' p (support) across the suite."""
    p = np.array([s.get("p_support_hypothesis", np.nan) for s in summaries], dtype=float)
    out = np.full(len(p), np.nan)
    ok = ~np.isnan(p)
    if ok.any():
        out[ok] = multipletests(p[ok], method="fdr_bh")[1]
    return out.tolist()


def render_index(summaries: list[dict[str, Any]]) -> str:
    summaries = sorted(summaries, key=lambda s: s["id"])
    counts = Counter(s["verdict"] for s in summaries)
    line = ", ".join(f"{counts.get(v, 0)} {v}" for v in _VERDICTS)
    bh = suite_adjusted(summaries)
    out = [
        "# falsify: hypothesis index",
        "",
        f"{len(summaries)} hypotheses: {line}.",
        "",
        "| hypothesis | verdict | pre-registration | part | estimate | CI | p | p adj (within) | p BH (suite) | replicates |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for s, q in zip(summaries, bh, strict=True):
        flag = " (overridden)" if s.get("overrides") else ""
        for i, part in enumerate(s["parts"]):
            first = i == 0
            cells = [
                f"[{s['id']}]({s['id']}.md){flag}" if first else "",
                f"**{s['verdict']}**" if first else "",
                (s.get("preregistration") or "–") if first else "",
                str(part["part"]),
                fmt(part["estimate"]),
                fmt_ci(part["ci_low"], part["ci_high"]),
                fmt_p(part["p_support"]),
                fmt_p(part["p_support_adj"]),
                fmt_p(q) if first else "",
                str(s["n_replicates"]) if first else "",
            ]
            out.append("| " + " | ".join(cells) + " |")
    out += [
        "",
        "Each CI is the (1 − 2α) interval the verdict rules read. p is the part's p (support): "
        "for a directional claim it tests the null that the claim's effect is absent "
        "(one-sided), for a `none` claim the equivalence (TOST) null that the effect lies "
        "outside ±δ; p adj (within) is adjusted within the hypothesis when `combine: any` "
        "(Holm unless the file says otherwise) and unadjusted under `combine: all`, an "
        "intersection–union test; "
        "p BH (suite) is the hypothesis' p (the largest part p for `combine: all`, the "
        "smallest for `any`) adjusted by Benjamini–Hochberg across every hypothesis listed here.",
        "",
    ]
    return "\n".join(out)
