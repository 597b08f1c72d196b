"""The replication report: a hypothesis' run and its rerun on fresh seeds, side by side.

``falsify replicate`` writes each run's own report with :func:`falsify.report.write_outcome`
(the original into ``--out``, the replication into ``--out``/replication/), then, with
:func:`write_replication`, ``<id>.replication.md`` comparing them and ``replications.md``, one
row per hypothesis replicated into that folder (docs/reports.md, "Replication reports").
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from falsify._io import atomic_write_text
from falsify.report.markdown import fmt, fmt_ci
from falsify.runner.outcome import Outcome
from falsify.runner.replicate import Replication

__all__ = [
    "REPLICATION_DIR",
    "render_replication",
    "render_suite",
    "seed_range",
    "write_replication",
]

# The folder under ``--out`` that holds the replications' own reports.
REPLICATION_DIR = "replication"

_READING = {
    "agrees": "gives the same verdict, and every part's estimate lies inside the original CI",
    "estimate differs": (
        "gives the same verdict, but some part's estimate lies outside the original CI"
    ),
    "verdict differs": "gives a different verdict; neither run contradicts the other with "
    "confidence (one of them is INCONCLUSIVE)",
    "contradicts": "contradicts the original: one run is SUPPORTED and the other FALSIFIED",
}


def seed_range(seeds: Sequence[int]) -> str:
    """``0–9`` for a run of consecutive seeds, else the list."""
    s = list(seeds)
    if s == list(range(s[0], s[0] + len(s))):
        return f"{s[0]}–{s[-1]}"
    return ", ".join(map(str, s))


def _yes(v: object) -> str:
    return "yes" if bool(v) else "**no**"


def _run_rows(o: Outcome) -> dict[str, str]:
    screening = o.screening
    left = int((~screening["included"]).sum()) if len(screening) else 0
    chance = int(screening["at_chance"].sum()) if len(screening) else 0
    return {
        "verdict": f"**{o.verdict.value}**",
        "seeds": seed_range(o.provenance.get("seeds", [])),
        "trained models": str(o.provenance.get("replicates")),
        "left out by `population.include`": str(left),
        "at chance level": str(chance),
        "loaded from the cache": str(o.provenance.get("cache_hits")),
    }


def render_replication(r: Replication, original_link: str, replication_link: str) -> str:
    o, rep = r.original, r.replication
    hyp = o.file.hypothesis
    level = f"{100 * (1 - 2 * hyp.prediction.alpha):g}%"
    out = [f"# {hyp.id}: replication {r.agreement}", ""]
    if r.contradicts:
        out += [
            f"> **CONFIDENT CONTRADICTION.** The original run is **{o.verdict.value}** and the "
            f"replication on fresh seeds **{rep.verdict.value}**: one of the two results does "
            "not hold for this recipe. Neither verdict should be reported without the other.",
            "",
        ]
    split = r.parts[r.parts["contradicts"]]
    if len(split) and not r.contradicts:
        out += [
            "> **Parts contradict:** "
            + ", ".join(f"`{p}`" for p in split["part"])
            + " is SUPPORTED in one run and FALSIFIED in the other.",
            "",
        ]
    out += [
        f"**{r.agreement.capitalize()}.** The replication on seeds "
        f"{seed_range(rep.provenance.get('seeds', []))} (every seed of the file plus "
        f"{r.offset}) {_READING[r.agreement]}.",
        "",
        f"Claim: {hyp.claim}",
        "",
        "| | original | replication |",
        "|---|---|---|",
    ]
    a, b = _run_rows(o), _run_rows(rep)
    out += [f"| {k} | {a[k]} | {b[k]} |" for k in a]
    out += [
        f"| report | [{original_link}]({original_link}) | [{replication_link}]({replication_link}) |"
    ]
    out += [
        "",
        "## Per part",
        "",
        f"| part | original | estimate | {level} CI | replication | estimate | {level} CI | "
        "same verdict | in original CI | original in replication CI |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for p in r.parts.itertuples():
        out.append(
            f"| {p.part} | {p.original_verdict} | {fmt(p.original_estimate)} | "
            f"{fmt_ci(p.original_ci_low, p.original_ci_high)} | {p.replication_verdict} | "
            f"{fmt(p.replication_estimate)} | {fmt_ci(p.replication_ci_low, p.replication_ci_high)} "
            f"| {_yes(p.same_verdict)} | {_yes(p.in_original_ci)} | "
            f"{_yes(p.original_in_replication_ci)} |"
        )
    out += [
        "",
        "A replication **agrees** when it has the same verdict and each part's estimate lies "
        f"inside the original's {level} CI; it **contradicts** when one run is SUPPORTED and the "
        'other FALSIFIED (docs/verdicts.md, "Replication"). Both runs are the file\'s own '
        "test at its own α on the same data; only the seeds differ.",
        "",
    ]
    return "\n".join(out)


def _record(r: Replication) -> dict[str, Any]:
    def run(o: Outcome) -> dict[str, Any]:
        return {
            "verdict": o.verdict.value,
            "seeds": o.provenance.get("seeds"),
            "excluded": o.provenance.get("excluded", 0),
        }

    return {
        "id": r.original.file.hypothesis.id,
        "agreement": r.agreement,
        "contradicts": r.contradicts,
        "seed_offset": r.offset,
        "original": run(r.original),
        "replication": run(r.replication),
        "by_part": r.parts.to_dict("records"),
    }


def render_suite(records: list[dict[str, Any]]) -> str:
    """``replications.md``: one row per part of every hypothesis replicated, contradictions
    first."""
    records = sorted(records, key=lambda rec: (not rec["contradicts"], rec["id"]))
    n_bad = sum(rec["contradicts"] for rec in records)
    same = sum(rec["original"]["verdict"] == rec["replication"]["verdict"] for rec in records)
    out = ["# falsify: replications", ""]
    if n_bad:
        ids = ", ".join(f"[{rec['id']}]({rec['id']}.replication.md)" for rec in records[:n_bad])
        out += [f"> **{n_bad} CONFIDENT CONTRADICTION{'S' * (n_bad > 1)}:** {ids}.", ""]
    out += [
        f"{len(records)} hypotheses replicated on fresh seeds: {same} with the same verdict.",
        "",
        "| hypothesis | agreement | part | original | estimate | CI | replication | estimate | CI |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for rec in records:
        for i, p in enumerate(rec["by_part"]):
            first = i == 0
            cells = [
                f"[{rec['id']}]({rec['id']}.replication.md)" if first else "",
                f"**{rec['agreement']}**" if first else "",
                str(p["part"]),
                str(p["original_verdict"]),
                fmt(p["original_estimate"]),
                fmt_ci(p["original_ci_low"], p["original_ci_high"]),
                str(p["replication_verdict"]),
                fmt(p["replication_estimate"]),
                fmt_ci(p["replication_ci_low"], p["replication_ci_high"]),
            ]
            out.append("| " + " | ".join(cells) + " |")
    out.append("")
    return "\n".join(out)


def write_replication(r: Replication, out_dir: Path) -> Path:
    """Write ``<id>.replication.md``, ``<id>.replication.csv`` (its per-part table) and
    ``<id>.replication.json``; rebuild ``replications.md``; return the report's path.

    Both runs' own reports must already be in ``out_dir`` and ``out_dir/replication/``.
    """
    hid = r.original.file.hypothesis.id
    report = out_dir / f"{hid}.replication.md"
    text = render_replication(r, f"{hid}.md", f"{REPLICATION_DIR}/{hid}.md")
    atomic_write_text(out_dir / f"{hid}.replication.csv", r.parts.to_csv(index=False))
    record = json.dumps(_record(r), indent=2, default=str)
    atomic_write_text(out_dir / f"{hid}.replication.json", record)
    atomic_write_text(report, text)
    records = []
    for p in sorted(out_dir.glob("*.replication.json")):
        try:
            data = json.loads(p.read_text())
        except (OSError, ValueError):
            continue
        if isinstance(data, dict) and {"id", "agreement", "by_part"} <= data.keys():
            records.append(data)
    atomic_write_text(out_dir / "replications.md", render_suite(records))
    return report
