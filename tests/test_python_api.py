"""docs/python-api.md: its Python blocks run as written, and a run's result shows itself in a
notebook as its Markdown report with the figures inline."""

from __future__ import annotations

import base64
import re
import shutil
from pathlib import Path

import pytest

from falsify.report.markdown import render_report
from falsify.report.notebook import ShownOutcome
from falsify.stats.verdict import Verdict

ROOT = Path(__file__).parents[1]
DOC = ROOT / "docs" / "python-api.md"
PNG = b"\x89PNG\r\n\x1a\n"


@pytest.fixture(scope="module")
def worked(tmp_path_factory: pytest.TempPathFactory) -> dict[str, object]:
    """The namespace after every ```python block of the doc, run in order from a folder that
    holds a copy of hypotheses/ (so its cache lands there)."""
    import os

    where = tmp_path_factory.mktemp("api")
    shutil.copytree(ROOT / "hypotheses", where / "hypotheses")
    blocks = re.findall(r"```python\n(.*?)```", DOC.read_text(), flags=re.S)
    assert len(blocks) >= 2
    namespace: dict[str, object] = {}
    before = Path.cwd()
    os.chdir(where)
    try:
        for block in blocks:
            exec(compile(block, str(DOC), "exec"), namespace)
    finally:
        os.chdir(before)
    assert (where / ".falsify").is_dir()
    return namespace


@pytest.mark.slow
def test_the_worked_example_runs(worked: dict[str, object]) -> None:
    outcome = worked["outcome"]
    assert isinstance(outcome, ShownOutcome)
    assert outcome.verdict in set(Verdict)
    assert set(outcome.parts["part"]) == {"hidden1", "hidden2"}
    assert outcome.provenance["replicates"] == 3
    assert len(worked["tidy"]) == 3 * 32  # seeds × units of hidden2
    assert worked["hf"].hypothesis.id == "my_claim"  # the from_dict block ran too


@pytest.mark.slow
def test_the_outcome_shows_as_its_report_with_figures_inline(worked: dict[str, object]) -> None:
    outcome = worked["outcome"]
    shown = outcome._repr_markdown_()
    hid = outcome.file.hypothesis.id
    assert shown.startswith(f"# {hid}: {outcome.verdict.value}")
    images = re.findall(r"!\[([^\]]+)\]\(data:image/png;base64,([A-Za-z0-9+/=]+)\)", shown)
    assert [name for name, _ in images] == [f"{hid}{s}.png" for s in outcome.figures]
    assert images and all(base64.b64decode(data).startswith(PNG) for _, data in images)
    # the rest is the report `falsify run` writes, word for word
    names = [name for name, _ in images]
    plain = re.sub(r"\(data:image/png;base64,[^)]+\)", lambda m: "", shown)
    expected = render_report(outcome, names, f"{hid}.csv")
    assert plain == re.sub(r"!\[([^\]]+)\]\(\1\)", r"![\1]", expected)
    assert outcome.markdown is outcome.markdown  # drawn once
