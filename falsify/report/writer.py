"""Writing a run's files: every file lands by rename, so a failed run overwrites nothing."""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from pathlib import Path

from falsify.report.index import render_index
from falsify.report.markdown import render_report, summary
from falsify.runner.outcome import Outcome

__all__ = ["write_index", "write_outcome"]


def write_outcome(o: Outcome, out_dir: Path) -> Path:
    """Write ``<id>.md``, its figures, ``<id>.csv`` and ``<id>.json``; return the report path.

    Everything is rendered into a temporary folder first and only then renamed into
    ``out_dir``, so an error while rendering leaves the previous report untouched.
    """
    out_dir.mkdir(parents=True, exist_ok=True)
    hid = o.file.hypothesis.id
    staging = Path(tempfile.mkdtemp(dir=out_dir, prefix=f".{hid}."))
    try:
        figures = []
        for suffix, draw in o.figures.items():
            figures.append(f"{hid}{suffix}.png")
            draw(staging / figures[-1])
        csv = f"{hid}.csv"
        o.tidy.to_csv(staging / csv, index=False)
        (staging / f"{hid}.md").write_text(render_report(o, figures, csv))
        (staging / f"{hid}.json").write_text(json.dumps(summary(o), indent=2, default=str))
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
    fd, tmp = tempfile.mkstemp(dir=out_dir, prefix=".index.", suffix=".tmp")
    with os.fdopen(fd, "w") as fh:
        fh.write(render_index(summaries))
    os.replace(tmp, path)
    return path
