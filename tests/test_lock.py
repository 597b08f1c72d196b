from __future__ import annotations

import json
from pathlib import Path

import pytest

from falsify.cli.main import main


@pytest.fixture
def setup(write, tiny_yaml, tmp_path: Path):
    path = write(tiny_yaml)
    out, cache, lock = tmp_path / "reports", tmp_path / "cache", tmp_path / "falsify.lock"

    def run(*extra: str) -> str:
        args = ["run", str(path), "--out", str(out), "--cache", str(cache), "--lock", str(lock)]
        assert main([*args, "--quiet", *extra]) == 0
        return (out / "tiny.md").read_text()

    return path, out, lock, run


def _status(report: str) -> str:
    line = next(s for s in report.splitlines() if s.startswith("Pre-registration:"))
    return line.split("**")[1]


def test_not_locked(setup) -> None:
    *_, run = setup
    assert _status(run()) == "NOT LOCKED"


def test_lock_then_run_is_preregistered_and_comments_do_not_matter(setup, tiny_yaml) -> None:
    path, out, lock, run = setup
    assert main(["lock", str(path), "--lock", str(lock), "--out", str(out)]) == 0
    assert _status(run()) == "PRE-REGISTERED"
    path.write_text(
        "# a comment added after locking\n" + tiny_yaml.replace("claim: Sel", "claim:  Sel")
    )
    assert _status(run()) == "PRE-REGISTERED"
    assert json.loads((out / "tiny.json").read_text())["preregistration"] == "PRE-REGISTERED"


def test_changing_sesoi_after_lock_is_visible(setup, tiny_yaml) -> None:
    path, out, lock, run = setup
    assert main(["lock", str(path), "--lock", str(lock), "--out", str(out)]) == 0
    path.write_text(tiny_yaml.replace("sesoi: 0.1", "sesoi: 0.3"))
    report = run()
    assert _status(report) == "CHANGED AFTER LOCK"
    assert "| `prediction.sesoi` | 0.1 | 0.3 |" in report
    assert "CHANGED AFTER LOCK" in (out / "index.md").read_text()


def test_override_after_lock_is_a_change(setup) -> None:
    path, out, lock, run = setup
    assert main(["lock", str(path), "--lock", str(lock), "--out", str(out)]) == 0
    assert "population.seeds" in run("--seeds", "2")


def test_lock_after_a_result_is_not_a_preregistration(setup) -> None:
    path, out, lock, run = setup
    run()
    summary = json.loads((out / "tiny.json").read_text())
    summary["first_result_at"] = "2000-01-01T00:00:00+00:00"  # a result long before the lock
    (out / "tiny.json").write_text(json.dumps(summary))
    assert main(["lock", str(path), "--lock", str(lock), "--out", str(out)]) == 0
    assert _status(run()) == "LOCKED AFTER RESULTS"
    # The first result's time is kept across later runs.
    assert json.loads((out / "tiny.json").read_text())["first_result_at"].startswith("2000")


def test_corrupt_lock_file_is_a_clear_error(setup, capsys) -> None:
    path, _out, lock, _ = setup
    lock.write_text("not json")
    assert main(["lock", str(path), "--lock", str(lock)]) == 2
    assert "must be JSON written by `falsify lock`" in capsys.readouterr().err


def test_fields_at_their_default_do_not_count_as_changes(setup, tiny_yaml) -> None:
    # Writing out a default explicitly (as a newer version's new field would be) is no change.
    path, out, lock, run = setup
    assert main(["lock", str(path), "--lock", str(lock), "--out", str(out)]) == 0
    path.write_text(tiny_yaml.replace("  sesoi: 0.1", "  sesoi: 0.1\n  alpha: 0.05"))
    assert _status(run()) == "PRE-REGISTERED"


def test_regularizer_settings_keep_their_locked_names(write) -> None:
    """A lock made before the ``training`` blocks stays valid: the decision content keeps the
    flat names. Expected content printed by ``decision_content`` at commit ecff3f6 (before the
    blocks) for this file."""
    from falsify.hypothesis.loader import load as load_file
    from falsify.hypothesis.lock import decision_content

    path = write(
        """\
id: lk
claim: c
population:
  data: {kind: digits}
  model: {kind: mlp, hidden: [16]}
  training: {epochs: 3, selectivity: {alpha: 1.0, layers: [hidden1]}, enmeshment: {lam: 0.5, k: 3}}
  seeds: 3
test:
  kind: association
  layers: [hidden1]
  x: {kind: class_selectivity}
  y: {kind: unit_ablation}
prediction: {direction: positive, sesoi: 0.1}
"""
    )
    assert decision_content(load_file(path).hypothesis) == {
        "population.data.kind": "digits",
        "population.model.hidden": [16],
        "population.model.kind": "mlp",
        "population.seeds": [0, 1, 2],
        "population.training.enmeshment_k": 3,
        "population.training.enmeshment_lambda": 0.5,
        "population.training.epochs": 3,
        "population.training.selectivity_alpha": 1.0,
        "population.training.selectivity_layers": ["hidden1"],
        "prediction.direction": "positive",
        "prediction.sesoi": 0.1,
        "test.kind": "association",
        "test.layers": ["hidden1"],
        "test.x.kind": "class_selectivity",
        "test.y.kind": "unit_ablation",
    }
