"""Regularizer windows and checkpoints during training (docs/file-format.md, "Windows";
docs/between-conditions.md, "Outcomes during training")."""

from __future__ import annotations

import json
import warnings
from pathlib import Path

import pandas as pd
import pytest
import torch
import yaml

import falsify
from falsify.cli.main import main
from falsify.data import load_dataset
from falsify.data.digits import DigitsData
from falsify.hypothesis.conditions import expand
from falsify.hypothesis.kinds import RegularizerKind
from falsify.hypothesis.loader import load
from falsify.hypothesis.schema import Population, TrainingSpec
from falsify.models.ensemble import supports_ensemble
from falsify.models.mlp import MLPSpec
from falsify.models.regularizers import Selectivity
from falsify.models.training import TrainResult, train_replicate
from falsify.runner.cache import ModelCache, checkpoint_key, replicate_key
from falsify.runner.replicates import recipe_of, train_seeds

CPU = torch.device("cpu")
HYPOTHESES = Path(__file__).resolve().parents[1] / "hypotheses"
DATA = DigitsData(kind="digits")


def _population(**training: object) -> Population:
    spec = TrainingSpec.model_validate({"epochs": 4, "batch_size": 128, **training})
    return Population(data=DATA, model=MLPSpec(kind="mlp", hidden=(16,)), training=spec, seeds=2)


def _train(seed: int = 0, **training: object) -> TrainResult:
    return train_replicate(_population(**training), load_dataset(DATA), seed, CPU)


def _same(a: torch.nn.Module, b: torch.nn.Module) -> bool:
    sa, sb = a.state_dict(), b.state_dict()
    return sa.keys() == sb.keys() and all(torch.equal(sa[k], sb[k]) for k in sa)


# --- windows change training exactly within the window ------------------------------------------


def test_a_window_over_the_whole_run_is_no_window() -> None:
    plain = _train(selectivity={"alpha": -2})
    windowed = _train(selectivity={"alpha": -2, "window": [0, 4]})
    assert _same(plain.model, windowed.model)
    assert plain.train_loss == windowed.train_loss


@pytest.mark.parametrize("block", ["selectivity", "enmeshment"])
def test_a_window_of_zero_length_is_the_term_switched_off(block: str) -> None:
    on = {"selectivity": {"alpha": -2}, "enmeshment": {"lam": 0.5, "k": 2}}[block]
    off = _train()
    for window in ([0, 0], [2, 2], [4, 4]):
        never = _train(**{block: {**on, "window": window}})
        assert _same(off.model, never.model), window
    assert not _same(off.model, _train(**{block: on}).model)  # the term does train


def test_a_window_changes_training_only_from_its_first_epoch() -> None:
    keep = {"checkpoint_epochs": [2]}
    off = _train(**keep)
    always = _train(selectivity={"alpha": -2}, **keep)
    late = _train(selectivity={"alpha": -2, "window": [2, 4]}, **keep)
    early = _train(selectivity={"alpha": -2, "window": [0, 2]}, **keep)
    # Before its window the late term has changed nothing; within it, it has.
    assert _same(late.checkpoints[2].model, off.checkpoints[2].model)
    assert not _same(late.model, off.model)
    # The early term trains as the always-on one until its window closes, then stops.
    assert _same(early.checkpoints[2].model, always.checkpoints[2].model)
    assert not _same(early.model, always.model)


def test_the_enmeshment_window_reclusters_when_it_opens() -> None:
    # Its first step in the window clusters the weights as they are then, so a window that
    # opens at 0 is the unwindowed term over those epochs.
    full = _train(enmeshment={"lam": 0.5, "k": 2}, checkpoint_epochs=[2])
    early = _train(enmeshment={"lam": 0.5, "k": 2, "window": [0, 2]}, checkpoint_epochs=[2])
    assert _same(full.checkpoints[2].model, early.checkpoints[2].model)


# --- checkpoints ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "recipe",
    [
        {},
        {"selectivity": {"alpha": -1}},
        {"warmup_steps": 5, "optimizer": "adamw"},
        {"control": "shuffled"},
        {"label_noise": 0.5, "optimizer": "sgd", "lr": 0.05},
    ],
    ids=["plain", "selectivity", "warmup", "shuffled", "noise-sgd"],
)
def test_a_checkpoint_is_the_model_trained_for_that_many_epochs(recipe: dict) -> None:
    run = _train(seed=3, checkpoint_epochs=[1, 3, 4], **recipe)
    for epoch in (1, 3):
        short = _train(seed=3, **{**recipe, "epochs": epoch})
        kept = run.checkpoints[epoch]
        assert _same(kept.model, short.model), epoch
        assert kept.test_accuracy == short.test_accuracy
        assert kept.train_loss == short.train_loss
        assert kept.metrics == short.metrics
    assert _same(run.checkpoints[4].model, run.model)
    # Keeping checkpoints leaves the trained model as it was.
    assert _same(run.model, _train(seed=3, **recipe).model)


def test_the_checkpoint_at_epoch_zero_is_the_untrained_control() -> None:
    run = _train(checkpoint_epochs=[0])
    untrained = _train(control="untrained")
    assert _same(run.checkpoints[0].model, untrained.model)
    assert run.checkpoints[0].train_loss == untrained.train_loss
    # An untrained control is its initialization at every epoch it keeps.
    control = _train(control="untrained", checkpoint_epochs=[0, 2])
    assert all(_same(c.model, untrained.model) for c in control.checkpoints.values())


def test_checkpoints_are_cached_as_models_of_their_own(tmp_path: Path) -> None:
    from falsify.runner.replicates import _save

    pop = _population(checkpoint_epochs=[2])
    cache = ModelCache(tmp_path)
    for result in train_seeds(pop, load_dataset(DATA), [0], CPU, False):
        _save(pop, CPU, cache, *result)
    recipe = recipe_of(pop)
    key = checkpoint_key(recipe, 2, 0, CPU)
    assert key != replicate_key(recipe, 0, CPU)
    assert cache.verified(key) and cache.verified(replicate_key(recipe, 0, CPU))
    info = json.loads(next(tmp_path.rglob(f"{key}.json")).read_text())
    assert info["checkpoint_epoch"] == 2
    assert info["test_accuracy"] == _train(epochs=2).test_accuracy


# --- cache keys ------------------------------------------------------------------------------------


def test_defaults_keep_every_cache_key() -> None:
    # The keys on main before windows and checkpoints existed (torch 2.13.0, the pinned wheel).
    want = {
        "selectivity_is_necessary": [
            "2b9d5ce4952747cc2aa1268c270c96beac2ae998051ac4ca3bd27cb0e7f84caf",
            "6a60485e8f2bbca47fb8536e60e93638fad6c5de26b83cf2dc8480c03c038afb",
            "088337c0f9c2ce1734daf91e29877c2dac8629d82495a7c5c87062bc7439b867",
            "d50e06ff1c6f208e7672bfabebf813f2e0afed7a28b1fdf490d1d4cd9db8d1d7",
        ],
        "enmeshment_increases_clusterability": [
            "d50e06ff1c6f208e7672bfabebf813f2e0afed7a28b1fdf490d1d4cd9db8d1d7",
            "dafa66d8871e050d3cfbc3586e2daf808b7334ab86c26d1f296c52cea6a98a37",
            "9594a566bd82c5f35bead0b9dcef0a45ed269cd059f5d04c88de0fd506da5e5b",
        ],
    }
    for name, keys in want.items():
        with warnings.catch_warnings():  # these files keep the deprecated flat names
            warnings.simplefilter("ignore", DeprecationWarning)
            hyp = load(HYPOTHESES / f"{name}.yaml").hypothesis
        got = [replicate_key(recipe_of(c.population), 0, CPU) for c in expand(hyp.population)]
        assert got == keys, name
    training = recipe_of(_population())["training"]
    assert not any("window" in k or "checkpoint" in k for k in training)


def test_what_changes_a_key_and_what_does_not() -> None:
    key = lambda pop: replicate_key(recipe_of(pop), 0, CPU)  # noqa: E731
    on = key(_population(selectivity={"alpha": -1}))
    assert key(_population(selectivity={"alpha": -1, "window": [0, 2]})) != on
    # A window on a term that is off changes nothing, nor do checkpoints.
    assert key(_population(selectivity={"window": [0, 2]})) == key(_population())
    assert key(_population(enmeshment={"window": [1, 3]})) == key(_population())
    assert key(_population(selectivity={"alpha": -1}, checkpoint_epochs=[1, 2])) == on
    windowed = recipe_of(_population(enmeshment={"lam": 0.5, "window": [1, 3]}))["training"]
    assert windowed["enmeshment_window"] == [1, 3] and windowed["enmeshment_lambda"] == 0.5
    # A kind without flat names (a plugin's) is keyed by its fields, the window apart.
    block = Selectivity(alpha=-1, window=(0, 2))
    assert RegularizerKind.recipe(block) == {"selectivity": {"alpha": -1.0, "layers": []}}
    assert Selectivity(alpha=-1).model_dump() == {"alpha": -1.0, "layers": ()}


# --- the ensemble trainer ---------------------------------------------------------------------------


def test_the_ensemble_trainer_refuses_checkpoints_and_falls_back() -> None:
    assert supports_ensemble(_population())
    assert not supports_ensemble(_population(checkpoint_epochs=[2]))
    # A windowed selectivity term is added per replicate in its epochs
    # (tests/test_ensemble_regularized.py); an enmeshment term reads the weights, unless its
    # window is empty and it is never added.
    assert supports_ensemble(_population(selectivity={"alpha": -1, "window": [0, 2]}))
    assert not supports_ensemble(_population(enmeshment={"lam": 0.5, "window": [0, 2]}))
    assert supports_ensemble(_population(enmeshment={"lam": 0.5, "window": [0, 0]}))
    pop = _population(checkpoint_epochs=[2])
    results = list(train_seeds(pop, load_dataset(DATA), [0, 1], CPU, False))
    assert [trainer for *_, trainer in results] == ["sequential", "sequential"]
    assert all(2 in result.checkpoints for _, result, _, _ in results)


# --- bad input is one located line -----------------------------------------------------------------


def _file(tmp_path: Path, training: dict, test: dict | None = None, conditions=None) -> Path:
    doc = {
        "id": "w",
        "claim": "A window claim.",
        "population": {
            "data": {"kind": "digits"},
            "model": {"kind": "mlp", "hidden": [16]},
            "training": {"epochs": 4, **training},
            "seeds": 2,
            "conditions": conditions or {"training.selectivity.alpha": [-1, 0]},
        },
        "test": test
        or {
            "kind": "between_conditions",
            "outcome": {"kind": "accuracy"},
            "compare": {"kind": "reference", "reference": {"training.selectivity.alpha": 0}},
        },
        "prediction": {"direction": "negative", "sesoi": 0.01},
    }
    path = tmp_path / "w.yaml"
    path.write_text(yaml.safe_dump(doc, sort_keys=False))
    return path


@pytest.mark.parametrize(
    ("training", "conditions", "field", "says"),
    [
        ({"selectivity": {"window": [3, 1]}}, None, "training.selectivity.window", "from <= until"),
        ({"selectivity": {"window": [0, 9]}}, None, "training.selectivity.window", "until <= 4"),
        (
            {"enmeshment": {"window": [-1, 2]}},
            None,
            "training.enmeshment.window[0]",
            "greater than or equal to 0",
        ),
        ({"selectivity": {"window": [0, 1, 2]}}, None, "training.selectivity.window", "2 items"),
        (
            {"steps": 50, "selectivity": {"window": [0, 1]}},
            None,
            "training.selectivity.window",
            "absent while 'steps' is set",
        ),
        ({"checkpoint_epochs": [2, 7]}, None, "training.checkpoint_epochs[1]", "0 to 4"),
        ({"checkpoint_epochs": [2, 2]}, None, "training.checkpoint_epochs", "distinct"),
        (
            {},
            {"training.selectivity.window": [[0, 2], [2, 6]]},
            "conditions.training.selectivity.window[1]",
            "until <= 4",
        ),
    ],
)
def test_a_bad_window_or_checkpoint_is_one_located_line(
    tmp_path: Path, capsys, training: dict, conditions, field: str, says: str
) -> None:
    path = _file(tmp_path, training, conditions=conditions)
    assert main(["check", "--no-estimate", str(path)]) != 0
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0, err
    assert f"'population.{field}' of {path} (line " in err and says in err, err


def test_an_outcome_at_an_epoch_not_kept_names_the_field(tmp_path: Path, capsys) -> None:
    test = {
        "kind": "between_conditions",
        "outcome": {"kind": "accuracy", "at_epoch": 3},
        "compare": {"kind": "reference", "reference": {"training.selectivity.alpha": 0}},
    }
    path = _file(tmp_path, {"checkpoint_epochs": [2]}, test)
    assert main(["check", "--no-estimate", str(path)]) != 0
    err = capsys.readouterr().err.strip()
    assert "'test.outcome.at_epoch' of" in err and "checkpoint_epochs' [2]" in err, err
    assert "Got 3 instead" in err, err


# --- end to end ------------------------------------------------------------------------------------


@pytest.mark.slow
def test_an_outcome_is_read_at_a_checkpoint_from_the_cli(tmp_path: Path, capsys) -> None:
    test = {
        "kind": "between_conditions",
        "outcomes": [
            {"name": "early", "outcome": {"kind": "accuracy", "at_epoch": 2}},
            {"name": "final", "outcome": {"kind": "accuracy"}},
        ],
        "compare": {"kind": "reference", "reference": {"training.selectivity.window": [2, 4]}},
    }
    grid = {"training.selectivity.window": [[0, 2], [2, 4]]}
    training = {"batch_size": 128, "selectivity": {"alpha": -2}}
    # First without checkpoints: the cache then holds the final models only.
    plain = _file(tmp_path, training, {**test, "outcomes": test["outcomes"][1:]}, grid)
    cache, out = str(tmp_path / "cache"), str(tmp_path / "out")
    main(["run", str(plain), "--cache", cache, "--out", out, "--quiet"])
    path = _file(tmp_path, {**training, "checkpoint_epochs": [2]}, test, grid)
    capsys.readouterr()
    # The checkpoints are trained once (their runs again), then loaded.
    for cached in ("(0 cached)", "(4 cached)"):
        main(["run", str(path), "--cache", cache, "--out", out, "--quiet"])
        assert cached in capsys.readouterr().out
    rows = pd.read_csv(tmp_path / "out" / "w.csv")
    assert len(rows) == 8
    for row in rows.itertuples():
        window = [0, 2] if row.condition == "selectivity.window=[0,2]" else [2, 4]
        recipe = {**training, "selectivity": {"alpha": -2, "window": window}}
        if row.outcome == "early":
            want = _train(row.seed, checkpoint_epochs=[2], **recipe).checkpoints[2]
        else:
            want = _train(row.seed, **recipe)
        # to float32 rounding (one image of 360 is 0.0028)
        assert row.value == pytest.approx(want.test_accuracy, abs=1e-6), row
    # The read at epoch 2 is not the final model's.
    assert not rows[rows.outcome == "early"].value.equals(rows[rows.outcome == "final"].value)
    # The per-replicate table's test accuracy is that of the model each outcome read.
    reps = falsify.run(path, cache=cache).replicates
    assert len(reps) == 8
    for row in reps.itertuples():
        assert row.test_accuracy == pytest.approx(row.statistic, abs=1e-6), row


@pytest.mark.slow
def test_the_bundled_file_runs_fast(tmp_path: Path) -> None:
    from falsify.runner import run_hypothesis

    fast = [
        "population.seeds=2",
        "population.training.epochs=2",
        "population.model.hidden=[16, 16]",
        "population.conditions={training.selectivity.window: [[0, 1], [1, 2]]}",
        "test.compare.reference={training.selectivity.window: [1, 2]}",
    ]
    hf = load(HYPOTHESES / "selectivity_matters_early.yaml", fast)
    outcome = run_hypothesis(hf, ModelCache(tmp_path / "cache"), CPU, False)
    assert outcome.verdict.value in {"SUPPORTED", "FALSIFIED", "INCONCLUSIVE"}
    (part,) = outcome.parts.itertuples()
    assert part.part == "selectivity.window=[0,1] vs selectivity.window=[1,2]"
    table = outcome.replicates.pivot(index="seed", columns="part", values="statistic")
    early, late = table["selectivity.window=[0,1]"], table["selectivity.window=[1,2]"]
    assert part.estimate == pytest.approx((early - late).mean())


def test_a_model_from_checkpoint_files_keeps_no_checkpoints(tmp_path: Path, capsys) -> None:
    doc = {
        "id": "w",
        "claim": "A claim on supplied weights.",
        "population": {
            "data": {"kind": "digits"},
            "model": {"kind": "mlp", "hidden": [16], "checkpoint": "net_{seed}.pt"},
            "training": {"epochs": 4, "checkpoint_epochs": [1]},
            "seeds": 2,
        },
        "test": {
            "kind": "association",
            "layers": ["hidden1"],
            "x": {"kind": "class_selectivity"},
            "y": {"kind": "unit_ablation"},
        },
        "prediction": {"direction": "positive", "sesoi": 0.1},
    }
    path = tmp_path / "w.yaml"
    path.write_text(yaml.safe_dump(doc, sort_keys=False))
    assert main(["check", "--no-estimate", str(path)]) != 0
    err = capsys.readouterr().err.strip()
    assert "'population.training.checkpoint_epochs' of" in err and "model.checkpoint" in err, err


def test_a_training_job_caches_the_checkpoints_too(tmp_path: Path) -> None:
    from falsify.runner.replicates import train_to_cache

    pop = _population(checkpoint_epochs=[1])
    key = train_to_cache(pop.model_dump(mode="json"), 0, "cpu", str(tmp_path), 1)
    assert key == replicate_key(recipe_of(pop), 0, CPU)
    assert ModelCache(tmp_path).verified(checkpoint_key(recipe_of(pop), 1, 0, CPU))
