"""A run's result in a notebook: Jupyter shows it as its Markdown report, figures inline
(docs/python-api.md).

:class:`ShownOutcome` is the :class:`~falsify.runner.Outcome` that :func:`falsify.run` returns,
with IPython's ``_repr_markdown_``: the report ``falsify run`` writes, with each figure embedded
as a base64 PNG (a notebook has no report folder for relative links to point into).
"""

from __future__ import annotations

import base64
import dataclasses
import tempfile
from functools import cached_property
from pathlib import Path

from falsify.report.drawers import draw
from falsify.report.markdown import render_report
from falsify.runner.outcome import Outcome

__all__ = ["ShownOutcome", "inline_markdown"]


def inline_markdown(o: Outcome) -> str:
    """The Markdown report of ``o`` with its figures as ``data:image/png;base64`` images."""
    hid = o.file.hypothesis.id
    names = [f"{hid}{suffix}.png" for suffix in o.figures]
    text = render_report(o, names, f"{hid}.csv")
    with tempfile.TemporaryDirectory(prefix="falsify-figures-") as tmp:
        for name, fig in zip(names, o.figures.values(), strict=True):
            png = Path(tmp) / name
            draw(fig.draw, fig.args, png)
            data = base64.b64encode(png.read_bytes()).decode("ascii")
            text = text.replace(f"![{name}]({name})", f"![{name}](data:image/png;base64,{data})")
    return text


@dataclasses.dataclass(frozen=True)
class ShownOutcome(Outcome):
    """An :class:`Outcome` that a notebook displays as its report (drawn once, on first show)."""

    @classmethod
    def of(cls, o: Outcome) -> ShownOutcome:
        return cls(**{f.name: getattr(o, f.name) for f in dataclasses.fields(o)})

    @cached_property
    def markdown(self) -> str:
        """The report, figures inline."""
        return inline_markdown(self)

    def _repr_markdown_(self) -> str:
        return self.markdown
