"""Numbers in every report are formatted by the helpers of falsify/report/markdown.py."""

from __future__ import annotations

import math

from falsify.report import index, markdown, replication
from falsify.report.markdown import fmt, fmt_ci


def test_one_ci_formatter_for_every_report() -> None:
    # The run report, the index and the replication reports print a CI the same way.
    for module in (index, replication):
        assert module.fmt_ci is markdown.fmt_ci
        assert not hasattr(module, "_ci")
    assert not hasattr(markdown, "_ci")


def test_ci_shows_an_undefined_end_as_a_dash() -> None:
    assert fmt_ci(math.nan, 0.25) == f"[{fmt(None)}, {fmt(0.25)}]"
    assert fmt(None) == fmt(math.nan) == "–"


def test_index_prints_the_ci_with_fmt_ci() -> None:
    part = {"part": "hidden1", "estimate": 0.3, "ci_low": math.nan, "ci_high": 0.5}
    part |= {"p_support": 0.2, "p_support_adj": 0.2, "verdict": "INCONCLUSIVE"}
    summary = {"id": "a", "verdict": "INCONCLUSIVE", "shape": "association", "parts": [part]}
    summary |= {"p_support_hypothesis": 0.2, "n_replicates": 5}
    assert fmt_ci(math.nan, 0.5) in index.render_index([summary])


def test_a_value_that_rounds_to_zero_has_no_sign() -> None:
    assert fmt(-1e-9) == fmt(0.0) == fmt(-0.0) == "0.000"
    assert fmt(-0.0004, 3) == "0.000" and fmt(-0.0006, 3) == "-0.001"
