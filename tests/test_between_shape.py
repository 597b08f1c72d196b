from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest
import torch

from falsify.cli.main import main
from falsify.errors import HypothesisError
from falsify.hypothesis import load
from falsify.runner import ModelCache, plan
from tests.helpers.populations import TINY_BETWEEN


def test_between_end_to_end(write, tmp_path: Path, capsys) -> None:
    out, cache = tmp_path / "reports", tmp_path / "cache"
    path = write(TINY_BETWEEN)
    args = ["run", str(path), "--out", str(out), "--cache", str(cache), "--quiet"]
    assert main(args) == 0
    assert "6 replicates (0 cached)" in capsys.readouterr().out
    summary = json.loads((out / "between_tiny.json").read_text())
    (part,) = summary["parts"]
    assert part["part"] == "label_noise=0.5 vs label_noise=0"
    assert part["ci_low"] <= part["estimate"] <= part["ci_high"]
    report = (out / "between_tiny.md").read_text()
    assert "| condition | seed | outcome: train accuracy |" in report
    assert "OLS with seed fixed effects" in report
    assert (out / "between_tiny.png").stat().st_size > 1000
    tidy = pd.read_csv(out / "between_tiny.csv")
    assert len(tidy) == 6
    assert {"condition", "seed", "outcome", "training.label_noise"} <= set(tidy.columns)
    assert "mean_selectivity" not in tidy.columns  # no condition regularizes selectivity
    # The estimate is the mean within-seed difference of the per-replicate outcomes.
    wide = tidy.pivot(index="seed", columns="condition", values="outcome")
    diff = (wide["label_noise=0.5"] - wide["label_noise=0"]).mean()
    assert part["estimate"] == pytest.approx(diff)
    # Models trained on half-random labels fit the labels they saw less well.
    assert (wide["label_noise=0.5"] < wide["label_noise=0"]).all()
    assert main(args) == 0
    assert "6 replicates (6 cached)" in capsys.readouterr().out


@pytest.mark.parametrize(
    "old,new,needle",
    [
        ("{training.label_noise: 0}}", "{training.label_noise: 0.3}}", "one of the grid's values"),
        ("{training.label_noise: 0}}", "{training.label_nois: 0}}", "Did you mean"),
        (
            "{kind: reference, reference: {training.label_noise: 0}}",
            "{kind: trend, factor: model.batch_norm}",
            "one of the grid fields",
        ),
        ("training.label_noise: [0, 0.5]", "training.label_noise: [0]", "at least 2 conditions"),
        (
            "{kind: reference, reference: {training.label_noise: 0}}",
            "{kind: reference, reference: {training.label_noise: 0}, extra: 1}",
            "not a known field",
        ),
        (
            "  outcome: {kind: accuracy, split: train}\n",
            "  outcome: {kind: accuracy, split: train}\n  outcomes: [{name: a, outcome: {kind: accuracy}}]\n",
            "absent when 'outcome' is given",
        ),
        (
            "  outcome: {kind: accuracy, split: train}\n",
            "  outcomes: [{name: a, outcome: {kind: accuracy}}, {name: a, outcome: {kind: accuracy}}]\n",
            "a name no other outcome has",
        ),
        (
            "  outcome: {kind: accuracy, split: train}\n",
            "  outcomes: [{name: a, outcome: {kind: ablation_auc, layers: [hiden1]}}]\n",
            "'test.outcomes[0].outcome.layers[0]'",
        ),
        ("training: {epochs: 2,", "training: {selectivity_layers: [head2], epochs: 2,", "'head'"),
        (
            "training: {epochs: 2,",
            "training: {selectivity: {layers: [hidden1, head2]}, epochs: 2,",
            "'population.training.selectivity.layers[1]'",
        ),
        (
            "training: {epochs: 2,",
            "training: {enmeshment: {layers: [hiden1]}, epochs: 2,",
            "'population.training.enmeshment.layers[0]'",
        ),
        (
            "training: {epochs: 2,",
            "training: {enmeshment: {lam: 1, layers: [hidden1.act]}, epochs: 2,",
            "'population.training.enmeshment.layers[0]'",
        ),
    ],
)
def test_bad_between_files_name_the_field(write, tmp_path, old, new, needle) -> None:
    path = write(TINY_BETWEEN.replace(old, new))
    with pytest.raises(HypothesisError) as exc:
        plan(load(path), ModelCache(tmp_path), torch.device("cpu"))
    assert needle in str(exc.value) and str(path) in str(exc.value)
    assert "(line " in str(exc.value)


def test_trend_needs_numbers_for_a_value_scale(write, tmp_path) -> None:
    text = TINY_BETWEEN.replace("training.label_noise: [0, 0.5]", "model.batch_norm: [false, true]")
    text = text.replace(
        "{kind: reference, reference: {training.label_noise: 0}}",
        "{kind: trend, factor: model.batch_norm}",
    )
    with pytest.raises(HypothesisError, match=r"'test\.compare'.*must be 'rank'"):
        plan(load(write(text)), ModelCache(tmp_path), torch.device("cpu"))
    ok = text.replace("factor: model.batch_norm}", "factor: model.batch_norm, scale: rank}")
    assert plan(load(write(ok)), ModelCache(tmp_path), torch.device("cpu")).n_replicates == 6


@pytest.mark.parametrize(
    "spec",
    [
        {"kind": "accuracy"},
        {"kind": "mean_selectivity"},
        {"kind": "ablation_auc", "orders": 2},
        {"kind": "direction_ablation_auc", "orders": 1},
        {"kind": "noise_auc", "scales": [0, 1, 2], "draws": 1},
    ],
)
def test_every_model_outcome_on_the_planted_model(spec) -> None:
    from pydantic import TypeAdapter

    from falsify.data import load_dataset
    from falsify.data.synthetic import SyntheticData
    from falsify.hypothesis.schema import ModelOutcome, Population
    from falsify.measures.model_level import TrainedModel
    from falsify.models.planted import planted_model

    data_spec = SyntheticData(kind="synthetic", n_samples=200, n_classes=4, n_features=8)
    model, _ = planted_model(data_spec)
    pop = Population.model_validate(
        {"data": data_spec.model_dump(), "model": {"kind": "mlp", "hidden": [12]}, "seeds": 2}
    )
    trained = TrainedModel(model, pop, load_dataset(data_spec), seed=0)
    outcome = TypeAdapter(ModelOutcome).validate_python(spec)
    value = outcome.compute(trained)
    assert 0.0 < value <= 1.0
    # Deterministic: the same replicate seed gives the same random orders and noise.
    assert outcome.compute(trained) == value
