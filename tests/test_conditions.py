from __future__ import annotations

import pytest
import torch

from falsify.data import load_dataset
from falsify.data.digits import DigitsData
from falsify.errors import HypothesisError
from falsify.hypothesis import load
from falsify.hypothesis.conditions import ConditionError, expand
from falsify.hypothesis.schema import Population, TrainingSpec
from falsify.models.mlp import MLPSpec
from falsify.models.training import training_labels
from falsify.runner.cache import ModelCache, replicate_key
from falsify.runner.replicates import obtain_replicates, recipe_of

CPU = torch.device("cpu")

GRID = """\
id: grid
claim: A grid of conditions.
population:
  data: {kind: digits}
  model: {kind: mlp, hidden: [8]}
  training: {epochs: 1, batch_size: 256}
  seeds: 2
  conditions:
    training.selectivity_alpha: [-1, 0, 1]
    model.batch_norm: [false, true]
test:
  kind: association
  layers: [hidden1]
  x: {kind: class_selectivity}
  y: {kind: unit_ablation}
prediction: {direction: positive, sesoi: 0.1}
"""


def _pop(**conditions) -> Population:
    return Population(
        data=DigitsData(kind="digits"),
        model=MLPSpec(kind="mlp", hidden=(8,)),
        training=TrainingSpec(epochs=1, batch_size=256),
        seeds=2,
        conditions=conditions,
    )


def test_grid_is_the_cartesian_product_in_file_order(write) -> None:
    pop = load(write(GRID)).hypothesis.population
    conds = expand(pop)
    assert [c.name for c in conds] == [
        "selectivity_alpha=-1, batch_norm=false",
        "selectivity_alpha=-1, batch_norm=true",
        "selectivity_alpha=0, batch_norm=false",
        "selectivity_alpha=0, batch_norm=true",
        "selectivity_alpha=1, batch_norm=false",
        "selectivity_alpha=1, batch_norm=true",
    ]
    last = conds[-1].population
    assert last.training.selectivity.alpha == 1.0 and last.model.batch_norm is True
    assert last.conditions == {} and last.seeds == pop.seeds
    assert conds[-1].value("model.batch_norm") is True


def test_nested_mapping_is_the_same_grid() -> None:
    flat = _pop(**{"training.label_noise": [0.0, 0.5]})
    nested = Population.model_validate(
        {
            **flat.model_dump(exclude={"conditions"}),
            "conditions": {"training": {"label_noise": [0, 0.5]}},
        }
    )
    assert [c.name for c in expand(nested)] == [c.name for c in expand(flat)]


def test_a_condition_equal_to_the_base_shares_the_cache_key() -> None:
    plain = _pop()
    grid = _pop(**{"training.selectivity_alpha": [0, 2.5]})
    keys = [replicate_key(recipe_of(c.population), 0, CPU) for c in expand(grid)]
    assert keys[0] == replicate_key(recipe_of(plain), 0, CPU)
    assert keys[1] != keys[0]


def test_no_conditions_is_one_unnamed_condition() -> None:
    (only,) = expand(_pop())
    assert only.name == "" and only.population == _pop()


@pytest.mark.parametrize(
    "line,needle,lineno",
    [
        ("    training.selectivty_alpha: [0, 1]", "Did you mean 'training.selectivity_alpha'", 9),
        ("    data.split_seed: [0, 1]", "must be a recipe field", 9),
        ("    training.label_noise: [0, 2]", "less than or equal to 1", 9),
        ("    training.label_noise: [0.5, 0.5]", "distinct values", 9),
        ("    training.epochs: 3", "valid tuple", 9),
    ],
)
def test_bad_conditions_name_file_line_and_field(write, line, needle, lineno) -> None:
    text = GRID.replace("    model.batch_norm: [false, true]\n", "").replace(
        "    training.selectivity_alpha: [-1, 0, 1]", line
    )
    path = write(text)
    with pytest.raises(HypothesisError) as exc:
        load(path)
    msg = str(exc.value)
    assert str(path) in msg and needle in msg and f"(line {lineno})" in msg
    assert "'population.conditions." in msg


def test_conditions_error_without_a_file() -> None:
    with pytest.raises(ConditionError, match=r"population\.conditions\.model\.kind"):
        expand(_pop(**{"model.kind": ["mlp"]}))


def test_association_refuses_a_grid(write, tmp_path) -> None:
    from falsify.runner import ModelCache, plan

    hf = load(write(GRID))
    with pytest.raises(HypothesisError, match=r"'population.conditions'.*\(line 9\).*empty"):
        plan(hf, ModelCache(tmp_path), CPU)


def test_replicates_of_a_grid_reuse_the_plain_population(tmp_path) -> None:
    data = load_dataset(DigitsData(kind="digits"))
    cache = ModelCache(tmp_path)
    plain = obtain_replicates(_pop(), data, cache, CPU, progress=False)
    grid = obtain_replicates(
        _pop(**{"training.label_noise": [0, 0.5]}), data, cache, CPU, progress=False
    )
    assert [(r.condition, r.seed, r.cache_hit) for r in grid] == [
        ("label_noise=0", 0, True),
        ("label_noise=0", 1, True),
        ("label_noise=0.5", 0, False),
        ("label_noise=0.5", 1, False),
    ]
    assert grid[0].key == plain[0].key
    # No regularizer is on, so nothing is recorded (achieved metrics only when some need them).
    assert all(r.metrics == {} for r in grid)
    # Cached metadata carries the training-time record.
    again = obtain_replicates(
        _pop(**{"training.label_noise": [0.5]}), data, cache, CPU, progress=False
    )
    assert again[0].cache_hit and again[0].metrics == grid[2].metrics


def test_label_noise_randomizes_the_fraction_fixed_by_seed() -> None:
    y = torch.arange(1000) % 10
    spec = TrainingSpec(label_noise=0.3)
    a = training_labels(spec, y, 10, seed=0)
    assert torch.equal(a, training_labels(spec, y, 10, seed=0))
    assert not torch.equal(a, training_labels(spec, y, 10, seed=1))
    changed = (a != y).float().mean().item()
    # 300 randomized labels, each kept by chance with probability 1/10: about 270 change.
    assert 0.22 < changed < 0.3
    assert torch.equal(training_labels(TrainingSpec(), y, 10, seed=0), y)
    # Not the first epoch's mini-batch order: the randomized examples are spread through it.
    first_epoch = torch.randperm(1000, generator=torch.Generator().manual_seed(0))
    assert (a != y)[first_epoch[:300]].float().mean().item() < 0.5
    assert torch.equal(y, torch.arange(1000) % 10)  # the input is not modified
