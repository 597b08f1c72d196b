"""Replicates that did not learn: the chance screen and the pre-registered inclusion rule.

Real trained populations: one epoch of an 8-unit MLP on digits leaves some seeds at chance, and
an ``untrained`` control is at chance by construction (docs/file-format.md, "Replicates that
did not learn").
"""

from __future__ import annotations

import math
from pathlib import Path

import pytest

import falsify
from falsify.cli.main import main
from falsify.data import load_dataset
from falsify.errors import HypothesisError
from falsify.runner import ModelCache, resolve_device
from falsify.runner.replicates import (
    CHANCE_ALPHA,
    chance_level,
    obtain_replicates,
    recipe_of,
    screen_replicates,
)

CONTROLS = """\
id: inclusion_controls
claim: Untrained models have lower test accuracy (a fast test population).
population:
  data: {kind: digits}
  model: {kind: mlp, hidden: [8]}
  training: {epochs: 1, batch_size: 128, lr: 0.01}
  seeds: 6
  conditions:
    training.control: [none, untrained]
test:
  kind: between_conditions
  outcome: {kind: accuracy, split: test}
  compare: {kind: reference, reference: {training.control: none}}
prediction:
  direction: negative
  sesoi: 0.02
"""

EPOCHS = """\
id: inclusion_epochs
claim: More epochs raise test accuracy (a fast test population).
population:
  data: {kind: digits}
  model: {kind: mlp, hidden: [8]}
  training: {epochs: 1, batch_size: 128, lr: 0.01}
  seeds: 6
  conditions:
    training.epochs: [1, 3]
test:
  kind: between_conditions
  outcome: {kind: accuracy, split: test}
  compare: {kind: reference, reference: {training.epochs: 1}}
prediction:
  direction: positive
  sesoi: 0.02
"""


@pytest.fixture(scope="module")
def cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("cache")


def _p_greater(k: int, n: int, p: float) -> float:
    """P(X ≥ k) for X ~ Binomial(n, p), summed term by term: the reference for binomtest."""
    return sum(math.comb(n, i) * p**i * (1 - p) ** (n - i) for i in range(k, n + 1))


def test_binomial_reference() -> None:
    # scipy.stats.binomtest(45, 360, 0.1, alternative="greater").pvalue
    assert _p_greater(45, 360, 0.1) == pytest.approx(0.0710226, abs=1e-7)


def test_chance_is_the_majority_rate_of_the_scored_test_labels() -> None:
    hf = falsify.load(
        Path(__file__).parents[1] / "hypotheses/modular_addition_uses_few_frequencies.yaml"
    )
    data = load_dataset(hf.hypothesis.population.data)
    rate, n = chance_level(data)
    answers = data.y_test[data.y_test != -100]
    assert n == len(answers) == len(data.y_test)  # one scored position per example
    assert rate == pytest.approx(answers.bincount().max().item() / n)
    assert rate >= 1 / data.n_classes


def test_every_replicate_is_screened_and_none_left_out_without_a_rule(
    write, cache: Path, tmp_path: Path
) -> None:
    out = tmp_path / "reports"
    outcome = falsify.run(write(CONTROLS), cache=cache, out=out)
    s = outcome.screening
    assert len(s) == 12 and s["included"].all() and (s["reason"] == "").all()
    n = len(load_dataset(outcome.file.hypothesis.population.data).y_test)
    for row in s.itertuples():
        p = _p_greater(round(row.test_accuracy * n), n, row.chance)
        assert row.p_above_chance == pytest.approx(p, rel=1e-6)
        assert row.at_chance == (p >= CHANCE_ALPHA)
    chance = s[s["at_chance"]]
    assert (chance["condition"] == "control=untrained").any()  # the control is at chance
    assert outcome.parts["n_replicates"].iloc[0] == 6  # a flag, not an exclusion
    text = (out / "inclusion_controls.md").read_text()
    who = ", ".join(f"{r.condition} / seed {r.seed}" for r in chance.itertuples())
    assert "replicates at chance level**: test accuracy not above the majority-class" in text
    assert f"{who}. {len(chance)} of them are in the statistics." in text
    assert "## Replicate screening" in text and "left out** by" not in text


def test_a_seed_left_out_in_one_condition_leaves_every_condition(
    write, cache: Path, tmp_path: Path
) -> None:
    path = write(EPOCHS)
    first = falsify.run(path, cache=cache)
    acc = first.screening.sort_values("test_accuracy")
    lowest, second = acc["test_accuracy"].iloc[:2]
    assert lowest < second  # a threshold between them leaves exactly one model out
    threshold = (lowest + second) / 2
    failed = acc.iloc[0]
    rule = f"population.include.min_test_accuracy={threshold}"
    outcome = falsify.run(falsify.load(path, [rule]), cache=cache, out=tmp_path / "r")
    assert outcome.provenance["cache_hits"] == 12  # the rule is not part of any cache key
    s = outcome.screening.set_index(["condition", "seed"])
    left = s[~s["included"]]
    assert set(left.index.get_level_values("seed")) == {failed.seed}
    assert len(left) == 2
    own = left.loc[(failed.condition, failed.seed), "reason"]
    assert own == f"test accuracy {failed.test_accuracy:.3f} < min_test_accuracy {threshold:g}"
    (partner,) = [c for c in left.index.get_level_values("condition") if c != failed.condition]
    reason = f"paired: seed {failed.seed} is left out in {failed.condition}"
    assert left.loc[(partner, failed.seed), "reason"] == reason
    # Left out of every statistic: the result is that of the file run on the other seeds.
    kept = [seed for seed in range(6) if seed != failed.seed]
    assert failed.seed not in set(outcome.replicates["seed"])
    alone = falsify.run(falsify.load(path, [f"population.seeds={kept}"]), cache=cache)
    cols = ["estimate", "ci_low", "ci_high", "n_replicates", "verdict"]
    assert outcome.parts[cols].equals(alone.parts[cols])
    text = (tmp_path / "r" / "inclusion_epochs.md").read_text()
    assert "> **2 of 12 replicates left out** by the pre-registered rule" in text
    assert f"| {partner} | {failed.seed} |" in text and reason in text
    assert "Across 10 trained models" in text


def test_without_a_grid_only_the_failing_replicate_leaves(write, cache: Path) -> None:
    hf = falsify.load(write(EPOCHS), ["population.include.above_chance=true"])
    pop = hf.hypothesis.population.model_copy(update={"conditions": {}})
    data = load_dataset(pop.data)
    reps = obtain_replicates(pop, data, ModelCache(cache), resolve_device("cpu"), False)
    kept, s = screen_replicates(pop, data, reps)
    assert s["at_chance"].any()  # one epoch leaves some seed at chance
    assert list(s["included"]) == [not flag for flag in s["at_chance"]]
    assert [r.seed for r in kept] == list(s.loc[s["included"], "seed"])
    assert (s.loc[~s["included"], "reason"].str.startswith("not above chance (binomial p = ")).all()


def test_a_grid_seed_at_chance_anywhere_is_left_out_everywhere(write, cache: Path) -> None:
    hf = falsify.load(write(CONTROLS), ["population.include.above_chance=true"])
    pop = hf.hypothesis.population
    data = load_dataset(pop.data)
    reps = obtain_replicates(pop, data, ModelCache(cache), resolve_device("cpu"), False)
    _, s = screen_replicates(pop, data, reps)
    at_chance = set(s.loc[s["at_chance"], "seed"])
    assert list(s["included"]) == [seed not in at_chance for seed in s["seed"]]


def test_a_rule_that_leaves_fewer_than_two_seeds_is_a_located_error(
    write, cache: Path, capsys
) -> None:
    path = write(
        EPOCHS.replace("  seeds: 6\n", "  seeds: 6\n  include: {min_test_accuracy: 0.99}\n")
    )
    assert (
        main(["run", str(path), "--cache", str(cache), "--out", str(path.parent / "r"), "--quiet"])
        == 1
    )
    err = capsys.readouterr().err
    assert err.startswith(
        f"error: The 'population.include' of {path} (line 8) must be a rule that "
    )
    assert "it left out seeds [0, 1, 2, 3, 4, 5] of 6" in err
    assert not (path.parent / "r" / "inclusion_epochs.md").exists()


def test_the_rule_is_validated_and_stays_out_of_the_recipe(write) -> None:
    with pytest.raises(HypothesisError, match="Did you mean 'min_test_accuracy'"):
        falsify.load(write(EPOCHS), ["population.include.min_test_acuracy=0.5"])
    with pytest.raises(HypothesisError, match="less than or equal to 1"):
        falsify.load(write(EPOCHS), ["population.include.min_test_accuracy=1.5"])
    plain = falsify.load(write(EPOCHS)).hypothesis.population
    ruled = falsify.load(write(EPOCHS), ["population.include.min_test_accuracy=0.5"])
    assert recipe_of(ruled.hypothesis.population) == recipe_of(plain)
    assert "include" not in plain.model_dump()  # so lock entries of files without it stay
    # a rule is in the dump, so `falsify lock` pre-registers it
    assert ruled.hypothesis.population.model_dump()["include"]["min_test_accuracy"] == 0.5
