"""``reports/index.md``: the suite at a glance, one row per hypothesis."""

from __future__ import annotations

from collections import Counter
from typing import Any

from falsify.report.markdown import fmt, fmt_p

__all__ = ["render_index"]


def render_index(summaries: list[dict[str, Any]]) -> str:
    counts = Counter(s["verdict"] for s in summaries)
    line = ", ".join(f"{counts.get(v, 0)} {v}" for v in ("SUPPORTED", "FALSIFIED", "INCONCLUSIVE"))
    out = [
        "# falsify: hypothesis index",
        "",
        f"{len(summaries)} hypotheses: {line}.",
        "",
        "| hypothesis | verdict | shape | part | estimate | CI | p (support) | p adj | replicates |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for s in sorted(summaries, key=lambda s: s["id"]):
        flag = " (overridden)" if s.get("overrides") else ""
        for i, part in enumerate(s["parts"]):
            head = (
                [f"[{s['id']}]({s['id']}.md){flag}", f"**{s['verdict']}**", s["shape"]]
                if i == 0
                else ["", "", ""]
            )
            cells = [
                *head,
                str(part["part"]),
                fmt(part["estimate"]),
                f"[{fmt(part['ci_low'])}, {fmt(part['ci_high'])}]",
                fmt_p(part["p_support"]),
                fmt_p(part["p_support_adj"]),
                str(s["n_replicates"]) if i == 0 else "",
            ]
            out.append("| " + " | ".join(cells) + " |")
    out.append("")
    out.append(
        "Each CI is the (1 − 2α) interval the verdict rules read; p (support) tests the null "
        "that the claim's effect is absent, adjusted within its hypothesis (p adj)."
    )
    out.append("")
    return "\n".join(out)
