"""Writing a run's files: every file lands by rename, so a failed run overwrites nothing."""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from pathlib import Path

from falsify._io import atomic_write_text, sweep, temp_prefix
from falsify.report.drawers import draw
from falsify.report.index import render_index
from falsify.report.markdown import render_report, summary
from falsify.runner.outcome import Outcome

__all__ = ["first_result_at", "write_index", "write_outcome"]


def first_result_at(out_dir: Path, hypothesis_id: str) -> str | None:
    """When the first result of ``hypothesis_id`` was written to ``out_dir`` (ISO time), if ever."""
    try:
        data = json.loads((out_dir / f"{hypothesis_id}.json").read_text())
    except (OSError, ValueError):
        return None
    return data.get("first_result_at") if isinstance(data, dict) else None


def write_outcome(o: Outcome, out_dir: Path) -> Path:
    """Write ``<id>.md``, its figures, ``<id>.csv`` (tidy data), ``<id>.parts.csv`` (one row per
    tested part: estimate, CI, p-values, standardized effect size and its kind, verdict) and
    ``<id>.json`` (the index record); return the report path.

    Everything is rendered into a temporary folder first and only then renamed into
    ``out_dir``, so an error while rendering leaves the previous report untouched.
    """
    out_dir.mkdir(parents=True, exist_ok=True)
    sweep(out_dir)  # what a killed run left
    hid = o.file.hypothesis.id
    staging = Path(tempfile.mkdtemp(dir=out_dir, prefix=temp_prefix(hid)))
    try:
        figures = []
        for suffix, fig in o.figures.items():
            figures.append(f"{hid}{suffix}.png")
            draw(fig.draw, fig.args, staging / figures[-1])
        csv = f"{hid}.csv"
        o.tidy.to_csv(staging / csv, index=False)
        o.parts.to_csv(staging / f"{hid}.parts.csv", index=False)
        (staging / f"{hid}.md").write_text(render_report(o, figures, csv))
        record = summary(o)
        record["first_result_at"] = first_result_at(out_dir, hid) or o.provenance.get("finished_at")
        (staging / f"{hid}.json").write_text(json.dumps(record, indent=2, default=str))
        for f in staging.iterdir():
            os.replace(f, out_dir / f.name)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    write_index(out_dir)
    return out_dir / f"{hid}.md"


def write_index(out_dir: Path) -> Path:
    """Rebuild ``index.md`` from every hypothesis summary in ``out_dir``."""
    summaries = []
    for p in sorted(out_dir.glob("*.json")):
        try:
            data = json.loads(p.read_text())
        except (OSError, ValueError):
            continue
        if isinstance(data, dict) and {"id", "verdict", "parts"} <= data.keys():
            summaries.append(data)
    path = out_dir / "index.md"
    atomic_write_text(path, render_index(summaries))
    return path
