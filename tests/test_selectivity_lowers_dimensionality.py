"""The bundled selectivity_lowers_dimensionality file runs end to end in a fast configuration."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from falsify.cli.main import main

FILE = Path(__file__).parents[1] / "hypotheses" / "selectivity_lowers_dimensionality.yaml"
FAST = [
    "--seeds",
    "2",
    "--set",
    "population.training.epochs=1",
    "--set",
    "population.model.hidden=[16, 16]",
]


@pytest.mark.slow
def test_bundled_dimensionality_file_runs_fast(tmp_path: Path) -> None:
    out = tmp_path / "reports"
    args = ["run", str(FILE), "--out", str(out), "--cache", str(tmp_path / "c"), "--quiet"]
    assert main(args + FAST) == 0
    summary = json.loads((out / "selectivity_lowers_dimensionality.json").read_text())
    assert summary["n_replicates"] == 2  # seeds; each trained at the 5 values of α
    assert len(pd.read_csv(out / "selectivity_lowers_dimensionality.csv")) == 10
    tidy = pd.read_csv(out / "selectivity_lowers_dimensionality.csv")
    # A participation ratio of a 16-unit layer lies in [1, 16].
    assert tidy["outcome"].between(1, 16).all()
    # The trend's slope (balanced grid, seed fixed effects) is the mean of per-seed slopes.
    factor = "training.selectivity_alpha"
    slopes = [np.polyfit(g[factor], g["outcome"], 1)[0] for _, g in tidy.groupby("seed")]
    assert summary["parts"][0]["estimate"] == pytest.approx(np.mean(slopes), abs=1e-9)
