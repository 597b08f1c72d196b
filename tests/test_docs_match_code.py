"""Statements in docs/ that tests can hold to the code (issue 13 item 11)."""

from __future__ import annotations

from pathlib import Path

import falsify.shapes  # noqa: F401 - registers the built-in shapes
from falsify.hypothesis.kinds import ARCHITECTURES, DATASETS, SHAPES
from falsify.report.index import render_index

DOCS = Path(__file__).parents[1] / "docs"


def test_file_format_names_every_shape_dataset_and_architecture() -> None:
    text = (DOCS / "file-format.md").read_text()
    for registry in (SHAPES, DATASETS, ARCHITECTURES):
        for name in registry:
            user = registry[name].import_path_key  # the user's own kind, spelled `loader:`
            spelled = f"`{user}:`" if user else f"`{name}`"
            assert spelled in text, f"docs/file-format.md does not name {spelled}"
    assert "One test shape exists today" not in text
    assert "Ids are not checked" not in text and "a negative one fails" not in text


def test_reports_md_shows_the_index_header_the_code_writes() -> None:
    header = next(line for line in render_index([]).splitlines() if line.startswith("| hyp"))
    assert header in (DOCS / "reports.md").read_text()


def test_methods_and_python_api_agree_on_one_thread_per_replicate() -> None:
    methods = (DOCS / "methods.md").read_text()
    assert "always runs on one CPU thread" in methods
    assert "available threads divided by N" not in methods
    assert "one CPU thread per\nreplicate" in (DOCS / "python-api.md").read_text()
