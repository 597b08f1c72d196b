"""What one hypothesis run produces: the tables the report and the CSV are made from."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import pandas as pd

from falsify.hypothesis.loader import HypothesisFile
from falsify.stats.verdict import Verdict

__all__ = ["Outcome"]


@dataclass
class Outcome:
    """The result of one hypothesis.

    ``parts``: one row per tested part (estimate, CI, raw/adjusted p, verdict).
    ``replicates``: one row per replicate × part (the per-model statistic).
    ``tidy``: the finest-grained data (one row per replicate × unit for association tests),
    written to CSV so any analysis can be redone in pandas.
    """

    file: HypothesisFile
    verdict: Verdict
    parts: pd.DataFrame
    replicates: pd.DataFrame
    tidy: pd.DataFrame
    labels: dict[str, str]  # column -> human label, for tables and figures
    notes: list[str] = field(default_factory=list)
    provenance: dict[str, Any] = field(default_factory=dict)
