"""Each bundled between-conditions hypothesis runs end to end in a fast configuration."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from falsify.hypothesis import load
from falsify.hypothesis.conditions import expand
from falsify.report import write_outcome
from falsify.runner import ModelCache, run_hypothesis

FAST = [
    "population.seeds=2",
    "population.training.epochs=1",
    "population.model.hidden=[16, 16]",
]

FILES = {
    "selectivity_is_necessary": 3,  # contrasts: α = −3, −1, −0.3 against α = 0
    "increasing_selectivity_hurts": 3,
    "memorizing_nets_rely_on_single_directions": 2,
    "batchnorm_reduces_single_direction_reliance": 1,
    "selectivity_and_robustness": 2,  # trends of two outcomes, adjusted together
}

HYPOTHESES = Path(__file__).parents[1] / "hypotheses"


@pytest.mark.slow
@pytest.mark.parametrize("name,n_parts", FILES.items())
def test_bundled_file_runs_fast(name: str, n_parts: int, tmp_path: Path) -> None:
    hf = load(HYPOTHESES / f"{name}.yaml", FAST)
    outcome = run_hypothesis(hf, ModelCache(tmp_path / "cache"), torch.device("cpu"), False)
    report = write_outcome(outcome, tmp_path / "reports")
    assert len(outcome.parts) == n_parts
    assert outcome.verdict.value in {"SUPPORTED", "FALSIFIED", "INCONCLUSIVE"}
    n_models = len(expand(hf.hypothesis.population)) * 2
    assert outcome.provenance["replicates"] == n_models
    # One row per trained model and outcome.
    assert len(outcome.replicates) == n_models * len(hf.hypothesis.test.named_outcomes())
    text = report.read_text()
    assert "overrides" in text and "## Per replicate" in text
    assert (tmp_path / "reports" / f"{name}.png").stat().st_size > 1000
    # Each contrast's estimate is the mean within-seed difference of the outcomes it compares.
    # A trend's slope (balanced grid, seed fixed effects) is the mean of per-seed slopes.
    tidy = pd.read_csv(tmp_path / "reports" / f"{name}.csv")
    for row in outcome.parts.itertuples():
        assert row.ci_low <= row.estimate <= row.ci_high
        if " vs " in row.part:
            wide = tidy.pivot(index="seed", columns="condition", values="outcome")
            cond, ref = row.part.split(" vs ")
            assert row.estimate == pytest.approx((wide[cond] - wide[ref]).mean())
        else:
            which, _ = row.part.split(": ")
            sub = tidy[tidy["outcome"] == which]
            factor = "training.selectivity_alpha"
            slopes = [np.polyfit(g[factor], g["value"], 1)[0] for _, g in sub.groupby("seed")]
            assert row.estimate == pytest.approx(np.mean(slopes), abs=1e-9)
    if name == "selectivity_and_robustness":
        assert outcome.parts["direction"].tolist() == ["negative", "positive"]
        assert "| part | predicted | estimate |" in text
