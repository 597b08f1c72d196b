"""Regression tests: each failed before the fix named in its docstring."""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from falsify.cli.main import main

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
