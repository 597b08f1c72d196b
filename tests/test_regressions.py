"""Regression tests: each failed before the fix named in its docstring."""

from __future__ import annotations

import pickle
from pathlib import Path

import pandas as pd
import torch

from falsify._imports import UserCodeError
from falsify.cli.main import main
from tests.helpers.usermodels import Net

BETWEEN = """\
id: reg_between
claim: Label noise lowers accuracy (a fast test population).
population:
  data: {kind: digits}
  model: {kind: mlp, hidden: [8]}
  training: {epochs: 1, batch_size: 128, lr: 0.01}
  seeds: 2
  conditions:
    training.label_noise: [0, 0.5]
test:
  kind: between_conditions
  outcome: {kind: accuracy}
  compare: {kind: reference, reference: {training.label_noise: 0}}
prediction:
  direction: negative
  sesoi: 0.02
"""


def _cli(*args: str) -> int:
    return main(list(args))


def _run(path: Path, tmp_path: Path) -> int:
    out, cache = tmp_path / "reports", tmp_path / "cache"
    return _cli("run", str(path), "--out", str(out), "--cache", str(cache), "--quiet")


def test_between_accuracy_on_a_model_without_unit_layers(write, tmp_path, capsys) -> None:
    """run_between computed the achieved selectivity of every replicate, so a plain
    Sequential (no unit layers) crashed even an accuracy test."""
    model = "  model:\n    factory: tests.helpers.usermodels:make_sequential\n"
    path = write(BETWEEN.replace("  model: {kind: mlp, hidden: [8]}\n", model))
    assert _run(path, tmp_path) == 0, capsys.readouterr().err
    tidy = pd.read_csv(tmp_path / "reports" / "reg_between.csv")
    assert "mean_selectivity" not in tidy.columns and len(tidy) == 4
    report = (tmp_path / "reports" / "reg_between.md").read_text()
    assert "| condition | seed | outcome: test accuracy | test accuracy | train loss |" in report
    assert (tmp_path / "reports" / "reg_between.png").stat().st_size > 1000


def test_checkpoints_refuse_a_grid_of_conditions(write, tmp_path, capsys) -> None:
    """Checkpoints with population.conditions passed check, then run crashed (KeyError)."""
    (tmp_path / "ckpt").mkdir()
    for seed in (0, 1):
        torch.save(Net(12).state_dict(), tmp_path / "ckpt" / f"net_{seed}.pt")
    model = (
        "  model:\n    factory: tests.helpers.usermodels:make_net\n    kwargs: {width: 12}\n"
        "    checkpoint: ckpt/net_{seed}.pt\n"
    )
    text = (
        BETWEEN.replace("  model: {kind: mlp, hidden: [8]}\n", model)
        .replace(
            "training.label_noise: [0, 0.5]",
            "training.label_noise: [0, 0.5]\n    training.lr: [0.01, 0.1]",
        )
        .replace("{training.label_noise: 0}}", "{training.label_noise: 0, training.lr: 0.01}}")
    )
    path = write(text)
    assert _cli("check", str(path), "--cache", str(tmp_path / "cache")) == 1
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1
    assert "'population.conditions'" in err and str(path) in err and "(line 12)" in err
    assert "checkpoint" in err


def test_decision_rule_describes_each_part_by_its_comparison(write, tmp_path, capsys) -> None:
    """With a second outcome overriding compare with a trend, the decision rule and the
    reading called both parts a difference against the reference."""
    outcomes = (
        "  outcomes:\n"
        "    - {name: held_out, outcome: {kind: accuracy}}\n"
        "    - name: fit\n"
        "      outcome: {kind: accuracy, split: train}\n"
        "      compare: {kind: trend, factor: training.label_noise}\n"
    )
    path = write(BETWEEN.replace("  outcome: {kind: accuracy}\n", outcomes))
    assert _run(path, tmp_path) == 0, capsys.readouterr().err
    report = (tmp_path / "reports" / "reg_between.md").read_text()
    rule = next(line for line in report.splitlines() if line.startswith("Predicted direction"))
    assert (
        "difference in test accuracy (held_out)" in rule and "slope of train accuracy (fit)" in rule
    )
    reading = report.splitlines()[2]
    assert "fit: slope per unit of label_noise: slope of train accuracy = " in reading
    assert "label_noise=0.5 vs label_noise=0: difference in test accuracy = " in reading


def test_located_error_during_run_is_the_files_one_line(write, tmp_path, capsys) -> None:
    """A LocatedError raised while training (here by the user's model) reached the CLI
    without the file, line or field."""
    model = (
        "  model:\n    factory: tests.helpers.usermodels:make_refusing_net\n"
        "    kwargs: {width: 12}\n"
    )
    path = write(BETWEEN.replace("  model: {kind: mlp, hidden: [8]}\n", model))
    assert _run(path, tmp_path) == 1
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1
    assert "'population.model.kwargs.width'" in err and str(path) in err
    assert "(line 7)" in err and "must be at least 1000. Got 12 instead." in err


def test_located_error_survives_pickling() -> None:
    """LocatedError could not be unpickled, so one raised in a training job (--jobs 2) broke
    the process pool (BrokenProcessPool, an internal error) instead of naming the field."""
    exc = UserCodeError(("population", "model", "kwargs"), "a mapping", 3, ["a"])
    back = pickle.loads(pickle.dumps(exc))
    assert type(back) is UserCodeError and str(back) == str(exc)
    assert (back.loc, back.expected, back.found, back.choices) == (exc.loc, "a mapping", 3, ["a"])
