"""What one hypothesis run produces: the tables the report and the CSV are made from."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd

from falsify.hypothesis.loader import HypothesisFile
from falsify.hypothesis.lock import PreRegistration
from falsify.stats.verdict import Verdict

__all__ = ["Outcome"]


@dataclass
class Outcome:
    """The result of one hypothesis.

    ``parts``: one row per tested part (estimate, CI, raw/adjusted p, verdict).
    ``replicates``: one row per replicate × part (the per-model statistic).
    ``tidy``: the finest-grained data (one row per ``tidy_grain``, e.g. replicate × unit),
    written to CSV so any analysis can be redone in pandas.
    ``figures``: name suffix -> function drawing that figure into the PNG path it is given
    (the report shows ``<id><suffix>.png`` for each).
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
    figures: dict[str, Callable[[Path], None]] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)
    provenance: dict[str, Any] = field(default_factory=dict)
    preregistration: PreRegistration | None = None
