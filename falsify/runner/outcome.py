"""What one hypothesis run produces: the tables the report and the CSV are made from."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import pandas as pd

from falsify.hypothesis.loader import HypothesisFile
from falsify.hypothesis.lock import PreRegistration
from falsify.shapes.base import Figure
from falsify.stats.verdict import Verdict

__all__ = ["Outcome"]


@dataclass(frozen=True)
class Outcome:
    """The result of one hypothesis.

    ``parts``: one row per tested part (estimate, CI, raw/adjusted p, verdict).
    ``replicates``: one row per replicate × part (the per-model statistic).
    ``tidy``: the finest-grained data (one row per ``tidy_grain``, e.g. replicate × unit),
    written to CSV so any analysis can be redone in pandas.
    ``figures``: name suffix -> the figure as data, drawn by the report package (which shows
    ``<id><suffix>.png`` for each). ``screening``: one row per trained replicate, its test
    accuracy against chance and whether the inclusion rule kept it
    (:func:`falsify.runner.replicates.screen_replicates`). Immutable: set a field with
    ``dataclasses.replace``.
    """

    file: HypothesisFile
    verdict: Verdict
    parts: pd.DataFrame
    replicates: pd.DataFrame
    tidy: pd.DataFrame
    tidy_grain: str  # what one row of ``tidy`` is, e.g. "replicate × unit"
    # column -> human label, for tables and figures; "statistic: PART" overrides "statistic"
    # for one part (e.g. one outcome compared as a trend, another against a reference)
    labels: dict[str, str]
    figures: dict[str, Figure] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)
    provenance: dict[str, Any] = field(default_factory=dict)
    preregistration: PreRegistration | None = None
    screening: pd.DataFrame = field(default_factory=pd.DataFrame)
