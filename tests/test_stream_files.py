"""Streaming from a hypothesis file (``population.data.stream: true``): the CLI run reads the
examples in batches end to end and writes what the in-memory run writes; kinds that would hold
the data are refused at check time, located (docs/performance.md, "Data that does not fit in
memory")."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from falsify.cli.main import main
from falsify.data.generated_images import GeneratedImagesData

DATA = "{kind: generated_images, n_train: 500, n_test: 240, noise: 0.5%s}"

# The population of the association and targeted files.
POPULATION = """\
population:
  data: %(data)s
  model: {kind: mlp, hidden: [24]}
  training: {epochs: 2, batch_size: 64}
  seeds: 3
"""

ASSOCIATION = (
    """\
id: %(id)s
claim: Units of a small MLP that are more class-selective matter more.
"""
    + POPULATION
    + """\
test:
  kind: association
  layers: [hidden1]
  x: {kind: %(x)s}
  y: {kind: unit_ablation, value: mean}
prediction: {direction: positive, sesoi: 0.1}
"""
)

TARGETED = (
    """\
id: %(id)s
claim: Ablating the most selective units hurts more than ablating matched random ones.
"""
    + POPULATION
    + """\
test:
  kind: targeted
  layers: [hidden1]
  scores: [{kind: class_selectivity}, {kind: mutual_information}]
  k: [4]
  draws: 5
  random: {match: activation, strata: 3}
prediction: {direction: positive, sesoi: 0.01}
"""
)

# Label noise makes the training labels differ from the items' labels, and the selectivity
# regularizer's achieved selectivity is read on the streamed test split.
BETWEEN = """\
id: %(id)s
claim: Regularizing selectivity down lowers the accuracy on the training labels.
population:
  data: %(data)s
  model: {kind: mlp, hidden: [16]}
  training: {epochs: 2, batch_size: 64, label_noise: 0.2}
  seeds: 2
  conditions:
    training.selectivity.alpha: [0, -1]
test:
  kind: between_conditions
  outcome: {kind: %(x)s, split: train}
  compare: {kind: reference, reference: {training.selectivity.alpha: 0}}
prediction: {direction: negative, sesoi: 0.01}
"""


CLUSTERS = """\
id: %(id)s
claim: Clusters of units specialize on classes.
population:
  data: %(data)s
  model: {kind: mlp, hidden: [16]}
  training: {epochs: 2, batch_size: 64}
  seeds: 2
test:
  kind: cluster_specialization
  layers: [hidden1]
  k: 2
  draws: 3
prediction: {direction: positive, sesoi: 0.01}
"""


def _write(folder: Path, template: str, stream: bool, x: str = "class_selectivity") -> Path:
    name = ("streamed" if stream else "in_memory") + "_" + x
    data = DATA % (", stream: true" if stream else "")
    path = folder / f"{name}.yaml"
    path.write_text(template % {"id": name, "data": data, "x": x})
    return path


def _run(path: Path, cache: Path, out: Path) -> dict[str, object]:
    assert main(["run", str(path), "--cache", str(cache), "--out", str(out)]) == 0
    return json.loads((out / f"{path.stem}.json").read_text())


def _assert_same_tables(a: Path, b: Path) -> None:
    """Equal columns and text; numbers equal to 1e-6 (a streamed forward pass runs on batches
    of 1,024, whose float sums may round differently from one pass over every example)."""
    left, right = pd.read_csv(a), pd.read_csv(b)
    assert list(left.columns) == list(right.columns)
    assert len(left) == len(right) > 0
    for column in left.columns:
        if pd.api.types.is_numeric_dtype(left[column]):
            np.testing.assert_allclose(left[column], right[column], atol=1e-6, rtol=0)
        else:
            assert left[column].tolist() == right[column].tolist(), column


def _never_load(monkeypatch: pytest.MonkeyPatch) -> None:
    """From here on a streamed run may not hold the dataset in memory whole."""

    def refuse(self: GeneratedImagesData) -> None:
        raise AssertionError("a streamed run loaded the whole dataset")

    monkeypatch.setattr(GeneratedImagesData, "load", refuse)


@pytest.mark.parametrize(
    ("template", "x"),
    [
        (ASSOCIATION, "class_selectivity"),
        (ASSOCIATION, "mean_activation"),
        (ASSOCIATION, "gradient_x_activation"),
        (TARGETED, "class_selectivity"),
        (BETWEEN, "accuracy"),
        (BETWEEN, "mean_selectivity"),
        (BETWEEN, "ablation_auc"),
        (BETWEEN, "effective_dimensionality"),
        (CLUSTERS, "clusters"),
    ],
)
def test_a_streamed_run_writes_what_the_in_memory_run_writes(
    tmp_path: Path,
    template: str,
    x: str,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    memory = _run(_write(tmp_path, template, False, x), tmp_path / "c1", tmp_path / "o1")
    _never_load(monkeypatch)
    streamed_path = _write(tmp_path, template, True, x)
    streamed = _run(streamed_path, tmp_path / "c2", tmp_path / "o2")  # a cold cache: trains
    for suffix in (".csv", ".parts.csv"):
        _assert_same_tables(
            tmp_path / "o1" / f"in_memory_{x}{suffix}", tmp_path / "o2" / f"streamed_{x}{suffix}"
        )
    assert streamed["verdict"] == memory["verdict"]
    # The same cache keys, with the in-memory weights bit for bit (streamed training reads the
    # same batches), and a streamed run finds every model the in-memory run trained.
    trained = {p.relative_to(tmp_path / "c1"): p for p in (tmp_path / "c1").rglob("*.safetensors")}
    again = {p.relative_to(tmp_path / "c2"): p for p in (tmp_path / "c2").rglob("*.safetensors")}
    assert sorted(trained) == sorted(again) and trained
    assert all(trained[k].read_bytes() == again[k].read_bytes() for k in trained)
    capsys.readouterr()
    _run(streamed_path, tmp_path / "c1", tmp_path / "o3")
    assert f"({len(trained)} cached)" in capsys.readouterr().out


def _check(path: Path, capsys: pytest.CaptureFixture[str]) -> str:
    assert main(["check", str(path), "--cache", str(path.parent / "cache")]) == 1
    return capsys.readouterr().err


@pytest.mark.parametrize(
    ("change", "field", "found"),
    [
        (
            ("kind: generated_images, n_train: 500", "kind: digits"),
            "population.data.stream",
            "True",
        ),
        (
            ("x: {kind: class_selectivity}", "x: {kind: induction_score}"),
            "test.x.kind",
            "induction_score",
        ),
        (
            ("{kind: unit_ablation, value: mean}", "{kind: unit_patching}"),
            "test.y.kind",
            "unit_patching",
        ),
    ],
)
def test_what_cannot_stream_is_refused_at_check_with_its_field(
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    change: tuple[str, str],
    field: str,
    found: str,
) -> None:
    path = _write(tmp_path, ASSOCIATION, True)
    path.write_text(path.read_text().replace(*change).replace(", noise: 0.5", ""))
    err = _check(path, capsys)
    assert f"'{field}'" in err and f"line {_line_of(path, change[1])}" in err, err
    assert found in err and "Traceback" not in err


def test_an_outcome_that_cannot_stream_is_refused(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = _write(tmp_path, BETWEEN, True, "noise_auc")
    err = _check(path, capsys)
    assert f"'test.outcome.kind' of {path} (line {_line_of(path, 'outcome:')})" in err, err
    assert "noise_auc" in err and "accuracy" in err


def _line_of(path: Path, text: str) -> int:
    return next(i for i, line in enumerate(path.read_text().splitlines(), 1) if text in line)
