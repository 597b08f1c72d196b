"""Control populations (``training.control``) are what they claim (docs/methods.md)."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest
import torch
from safetensors.torch import save_file
from scipy.stats import binom

from falsify.cli.main import main
from falsify.data import load_dataset
from falsify.data.labels import training_labels
from falsify.errors import HypothesisError
from falsify.hypothesis import load
from falsify.hypothesis.schema import Population
from falsify.models import build_model
from falsify.models.ensemble import supports_ensemble
from falsify.models.mlp import MLPSpec
from falsify.models.training import evaluate, train_replicate
from falsify.runner.cache import replicate_key
from falsify.runner.replicates import recipe_of

CPU = torch.device("cpu")
BASE = {"data": {"kind": "digits"}, "model": {"kind": "mlp", "hidden": [64]}, "seeds": 2}
SEEDS = (0, 1, 2)


def _population(**training: object) -> Population:
    return Population.model_validate(BASE | {"training": training})


def _chance(n: int, n_classes: int) -> tuple[float, float]:
    """The central 99.9% interval of the accuracy of guessing on ``n`` examples.

    On digits' test split: scipy.stats.binom.interval(0.999, 360, 0.1) = (19.0, 56.0), so
    [0.053, 0.156].
    """
    low, high = binom.interval(0.999, n, 1 / n_classes)
    return float(low) / n, float(high) / n


def test_untrained_models_are_at_chance() -> None:
    pop = _population(control="untrained", epochs=30)
    data = load_dataset(pop.data)
    low, high = _chance(len(data.y_test), data.n_classes)
    assert (low, high) == pytest.approx((19 / 360, 56 / 360))
    trained = train_replicate(_population(epochs=5), data, 0, CPU).test_accuracy
    for seed in SEEDS:
        result = train_replicate(pop, data, seed, CPU)
        assert low <= result.test_accuracy <= high, seed
        # an untrained replicate is the architecture's initialization at that seed
        torch.manual_seed(seed)
        init = build_model(pop.model, data.input_shape, data.n_classes)
        for a, b in zip(init.parameters(), result.model.parameters(), strict=True):
            assert torch.equal(a, b)
    assert trained > high


def test_shuffled_weights_keep_each_layers_multiset() -> None:
    data = load_dataset(_population().data)
    trained = train_replicate(_population(epochs=3), data, 0, CPU).model
    shuffled = train_replicate(_population(epochs=3, control="shuffled"), data, 0, CPU).model
    pairs = list(zip(trained.named_parameters(), shuffled.named_parameters(), strict=True))
    assert len(pairs) == 4  # hidden1.linear weight and bias, head weight and bias
    for (name, a), (other, b) in pairs:
        assert name == other
        assert torch.equal(a.flatten().sort().values, b.flatten().sort().values), name
        assert not torch.equal(a, b), name
    again = train_replicate(_population(epochs=3, control="shuffled"), data, 0, CPU).model
    assert all(
        torch.equal(a, b) for a, b in zip(shuffled.parameters(), again.parameters(), strict=True)
    )


def test_permuted_labels_train_above_chance_and_test_at_chance() -> None:
    pop = _population(control="permuted_labels", epochs=30, lr=0.01, batch_size=128)
    data = load_dataset(pop.data)
    for seed in SEEDS:
        y = training_labels(pop.training, data.y_train, data.n_classes, seed)
        # a permutation: every class keeps its frequency, most examples change label
        assert torch.equal(y.sort().values, data.y_train.sort().values)
        assert (y != data.y_train).float().mean() > 0.8
        result = train_replicate(pop, data, seed, CPU)
        assert result.test_accuracy <= _chance(len(data.y_test), data.n_classes)[1], seed
        train_acc = evaluate(result.model, data.x_train, y)
        assert train_acc > _chance(len(y), data.n_classes)[1], seed


def test_a_control_is_a_recipe_and_none_keeps_keys() -> None:
    plain = _population(epochs=2)
    keys = {
        c: replicate_key(recipe_of(_population(epochs=2, control=c)), 0, CPU)
        for c in ("none", "untrained", "shuffled", "permuted_labels")
    }
    assert keys["none"] == replicate_key(recipe_of(plain), 0, CPU)
    assert "control" not in recipe_of(plain)["training"]
    assert len(set(keys.values())) == 4
    # the ensemble trainer reproduces plain recipes only: controls train one seed at a time
    assert supports_ensemble(plain)
    assert not any(supports_ensemble(_population(control=c)) for c in list(keys)[1:])


TRAINING = "training: {epochs: 3, batch_size: 128, lr: 0.01}"


def _level(tiny_yaml: str, control: str) -> str:
    """conftest's association claim, on a control population."""
    assert TRAINING in tiny_yaml
    return tiny_yaml.replace(TRAINING, TRAINING[:-1] + f", control: {control}}}")


def test_a_bad_control_names_the_field(write, tiny_yaml: str) -> None:
    with pytest.raises(HypothesisError, match=r"population\.training\.control"):
        load(write(_level(tiny_yaml, "untraind")))


def test_a_level_claim_on_a_control_names_it(write, tiny_yaml: str, tmp_path: Path) -> None:
    out = tmp_path / "reports"
    path = write(_level(tiny_yaml, "shuffled"))
    assert load(path).hypothesis.population.training.control == "shuffled"
    args = ["run", str(path), "--out", str(out), "--cache", str(tmp_path / "c"), "--quiet"]
    assert main(args) == 0
    report = (out / "tiny.md").read_text()
    assert "Population: the `shuffled` control of this recipe" in report


BETWEEN = """\
id: trained_vs_untrained
claim: Training lifts test accuracy above that of the untrained architecture.
population:
  data: {kind: digits}
  model: {kind: mlp, hidden: [16]}
  training: {epochs: 3, batch_size: 128, lr: 0.01}
  seeds: 3
  conditions:
    training.control: [none, untrained]
test:
  kind: between_conditions
  outcome: {kind: accuracy, split: test}
  compare: {kind: reference, reference: {training.control: none}}
prediction:
  direction: negative
  sesoi: 0.1
"""


def test_trained_vs_untrained_end_to_end(write, tmp_path: Path, capsys) -> None:
    out, cache = tmp_path / "reports", tmp_path / "cache"
    path = write(BETWEEN)
    args = ["run", str(path), "--out", str(out), "--cache", str(cache), "--quiet"]
    assert main(args) == 0
    assert "6 replicates (0 cached)" in capsys.readouterr().out
    summary = json.loads((out / "trained_vs_untrained.json").read_text())
    (part,) = summary["parts"]
    assert part["part"] == "control=untrained vs control=none"
    high = _chance(360, 10)[1]
    assert part["ci_high"] < -0.5  # from ~0.8 trained to ~0.1 untrained
    assert summary["verdict"] == "SUPPORTED"
    report = (out / "trained_vs_untrained.md").read_text()
    assert "control=untrained" in report
    tidy = pd.read_csv(out / "trained_vs_untrained.csv")
    untrained = tidy[tidy["condition"] == "control=untrained"]["outcome"]
    assert len(untrained) == 3 and (untrained <= high).all()
    assert (tidy[tidy["condition"] == "control=none"]["outcome"] > high).all()


def test_a_checkpointed_model_cannot_be_a_control(write, tiny_yaml: str, tmp_path: Path, capsys):
    (tmp_path / "w").mkdir()
    for s in (0, 1, 2):
        torch.manual_seed(s)
        model = build_model(MLPSpec(kind="mlp", hidden=(16,)), (1, 8, 8), 10)
        save_file(model.state_dict(), str(tmp_path / "w" / f"{s}.safetensors"))
    text = _level(tiny_yaml, "untrained").replace(
        "hidden: [16]}", "hidden: [16], checkpoint: 'w/{seed}.safetensors'}"
    )
    args = ["run", str(write(text)), "--out", str(tmp_path / "r"), "--cache", str(tmp_path / "c")]
    assert main([*args, "--quiet"]) != 0
    err = capsys.readouterr().err
    assert "'population.training.control' of a model loaded from checkpoints" in err
    assert "Traceback" not in err
