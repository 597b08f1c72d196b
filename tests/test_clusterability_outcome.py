"""The clusterability outcome, the level comparison, and the bundled enmeshment file."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from scipy import stats

from falsify.data import load_dataset
from falsify.data.digits import DigitsData
from falsify.errors import FalsifyError
from falsify.hypothesis import load
from falsify.hypothesis.conditions import expand
from falsify.hypothesis.schema import Population
from falsify.measures.clusterability import model_clusterability
from falsify.measures.model_level import ClusterabilityOutcome, TrainedModel
from falsify.models.mlp import MLP, MLPSpec
from falsify.report import write_outcome
from falsify.runner import ModelCache, run_hypothesis
from falsify.stats.between import fit_levels

HYPOTHESES = Path(__file__).parents[1] / "hypotheses"
POP = Population(
    data=DigitsData(kind="digits"), model=MLPSpec(kind="mlp", hidden=(20, 12)), seeds=(0, 1)
)


def test_fit_levels_is_the_one_sample_t_test() -> None:
    rng = np.random.default_rng(4)
    table = pd.DataFrame(
        [(c, s, rng.normal(mu, 1.0)) for c, mu in (("a", 0.3), ("b", -1.0)) for s in range(7)],
        columns=["condition", "seed", "y"],
    )
    fit = fit_levels(table, ["a", "b"])
    for c in ("a", "b"):
        y = table.loc[table.condition == c, "y"].to_numpy()
        ref = stats.ttest_1samp(y, 0.0)  # scipy: one-sample t against 0
        est = fit.estimates[c]
        assert est.estimate == pytest.approx(y.mean()) and est.df == 6
        assert est.estimate / est.se == pytest.approx(ref.statistic)
        assert 2 * min(est.p_greater(0), est.p_less(0)) == pytest.approx(ref.pvalue)
        assert fit.effect_sizes[c] == pytest.approx(y.mean() / y.std(ddof=1))
    with pytest.raises(ValueError, match="at least 2 seeds"):
        fit_levels(table[(table.condition == "b") | (table.seed == 0)], ["a"])


@pytest.mark.parametrize("baseline", ["none", "random_partition", "shuffled"])
def test_clusterability_outcome_is_c_minus_the_chosen_baseline(baseline: str) -> None:
    torch.manual_seed(0)
    model = MLP(64, (20, 12), 10)
    trained = TrainedModel(model, POP, load_dataset(POP.data), seed=3)
    spec = ClusterabilityOutcome(kind="clusterability", k=3, baseline=baseline, shuffle_draws=2)
    value = spec.compute(trained)
    assert spec.compute(trained) == value  # the shuffles are seeded
    table = model_clusterability(model, ("hidden1", "hidden2"), 3)
    c, random = table.iloc[-1]["clusterability"], table.iloc[-1]["random_baseline"]
    if baseline == "none":
        assert value == pytest.approx(c)
    elif baseline == "random_partition":
        assert value == pytest.approx(c - random)
    else:
        # the shuffled null includes the co-clustering's own search, so it is a stricter
        # baseline than a random partition on random weights
        assert value < c - random
    named = ClusterabilityOutcome(kind="clusterability", k=3, layers=("hidden2",))
    only = model_clusterability(model, ("hidden2",), 3).iloc[-1]["clusterability"]
    assert named.compute(trained) == pytest.approx(only)


FAST = [
    "population.seeds=2",
    "population.training.epochs=2",
    "population.training.batch_size=256",
    "population.model.hidden=[16, 16]",
    "population.training.enmeshment.k=3",
]


@pytest.mark.slow
def test_bundled_enmeshment_file_runs_fast(tmp_path: Path) -> None:
    name = "enmeshment_increases_clusterability"
    hf = load(HYPOTHESES / f"{name}.yaml", FAST)
    outcome = run_hypothesis(hf, ModelCache(tmp_path / "cache"), torch.device("cpu"), False)
    write_outcome(outcome, tmp_path / "reports")
    # 2 contrasts against λ = 0, and 2 levels for each of the two baselines
    assert len(outcome.parts) == 6
    assert outcome.verdict.value in {"SUPPORTED", "FALSIFIED", "INCONCLUSIVE"}
    assert len(expand(hf.hypothesis.population)) == 3
    tidy = pd.read_csv(tmp_path / "reports" / f"{name}.csv")
    for row in outcome.parts.itertuples():
        which, comparison = row.part.split(": ")
        sub = tidy[tidy["outcome"] == which]
        wide = sub.pivot(index="seed", columns="condition", values="value")
        cond, ref = comparison.split(" vs ")
        if ref == "0":  # a level: the mean over seeds of C minus its baseline
            column = "random_baseline" if "random" in which else "shuffled_baseline"
            mine = sub[sub["condition"] == cond]
            assert row.estimate == pytest.approx((mine["clusterability"] - mine[column]).mean())
            assert row.estimate == pytest.approx(wide[cond].mean())
        else:
            assert row.estimate == pytest.approx((wide[cond] - wide[ref]).mean())
    # one baselines figure: the three outcomes share their clusterings
    figures = sorted(p.name for p in (tmp_path / "reports").glob(f"{name}-*.png"))
    assert figures == [f"{name}-clusterability.png"]


def test_a_level_must_name_a_condition_of_the_grid(tmp_path: Path) -> None:
    text = (HYPOTHESES / "enmeshment_increases_clusterability.yaml").read_text()
    bad = text.replace(
        "[{training.enmeshment_lambda: 0.1}, {", "[{training.enmeshment_lambda: 0.5}, {", 1
    )
    assert bad != text
    path = tmp_path / "h.yaml"
    path.write_text(bad)
    with pytest.raises(FalsifyError, match=r"one of the grid's values") as exc:
        run_hypothesis(load(path, FAST), ModelCache(tmp_path / "cache"), torch.device("cpu"), False)
    assert "test.outcomes[1].compare.conditions[0]" in str(exc.value) and "(line " in str(exc.value)
