"""Each bundled transformer hypothesis runs end to end in a fast configuration."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from falsify.hypothesis import load
from falsify.report import write_outcome
from falsify.runner import ModelCache, run_hypothesis

HYPOTHESES = Path(__file__).parents[1] / "hypotheses"
FAST = ["population.seeds=2", "population.training.steps=5"]
FILES = {
    "induction_heads_are_necessary": 2,  # k = 1 and 2
    "induction_score_predicts_head_importance": 1,
    "modular_addition_uses_few_frequencies": 1,
    "selectivity_predicts_importance_in_transformers": 1,
}


@pytest.mark.slow
@pytest.mark.parametrize(("name", "n_parts"), FILES.items())
def test_bundled_transformer_file_runs_fast(name: str, n_parts: int, tmp_path: Path) -> None:
    hf = load(HYPOTHESES / f"{name}.yaml", FAST)
    outcome = run_hypothesis(hf, ModelCache(tmp_path / "cache"), torch.device("cpu"), False)
    write_outcome(outcome, tmp_path / "reports")
    assert len(outcome.parts) == n_parts
    assert outcome.verdict.value in {"SUPPORTED", "FALSIFIED", "INCONCLUSIVE"}
    for row in outcome.parts.itertuples():
        assert row.ci_low <= row.estimate <= row.ci_high
    assert (tmp_path / "reports" / f"{name}.png").stat().st_size > 1000
