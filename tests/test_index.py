from __future__ import annotations

import pytest

from falsify.report.index import render_index, suite_adjusted


def _summary(hid: str, p: float, verdict: str = "SUPPORTED") -> dict:
    part = {
        "part": "hidden1",
        "estimate": 0.3,
        "ci_low": 0.1,
        "ci_high": 0.5,
        "p_support": p,
        "p_support_adj": p,
        "verdict": verdict,
    }
    return {
        "id": hid,
        "verdict": verdict,
        "shape": "association",
        "parts": [part],
        "p_support_hypothesis": p,
        "n_replicates": 5,
    }


def test_benjamini_hochberg_reference() -> None:
    # BH by hand for p = (0.01, 0.04, 0.03, 0.20), m = 4: sorted p·m/rank = 0.04, 0.06, 0.0533…,
    # 0.20; then a running minimum from the largest rank down: 0.04, 0.0533, 0.0533, 0.20.
    summaries = [_summary(h, p) for h, p in zip("abcd", (0.01, 0.04, 0.03, 0.20), strict=True)]
    assert suite_adjusted(summaries) == pytest.approx([0.04, 0.16 / 3, 0.16 / 3, 0.20])


def test_index_counts_and_rows() -> None:
    text = render_index([_summary("b", 0.5, "FALSIFIED"), _summary("a", 0.01)])
    assert "2 hypotheses: 1 SUPPORTED, 1 FALSIFIED, 0 INCONCLUSIVE." in text
    assert text.index("[a](a.md)") < text.index("[b](b.md)")
