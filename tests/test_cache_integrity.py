"""Damaged cache entries are detected and repaired; concurrent runs share one training."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from falsify.cli.main import main
from falsify.hypothesis.schema import TrainingSpec
from falsify.runner.cache import replicate_key
from falsify.runner.replicates import recipe_of

from .test_cache import CPU, POP

ROOT = Path(__file__).parents[1]


def _run(path: Path, out: Path, cache: Path) -> None:
    assert main(["run", str(path), "--out", str(out), "--cache", str(cache), "--quiet"]) == 0


def test_flipped_bytes_in_weights_are_a_repaired_miss(write, tiny_yaml, tmp_path) -> None:
    path = write(tiny_yaml)
    cache = tmp_path / "cache"
    _run(path, tmp_path / "clean", cache)
    weights = sorted(cache.rglob("*.safetensors"))[1]
    blob = bytearray(weights.read_bytes())
    middle = len(blob) // 2
    blob[middle : middle + 8] = bytes(b ^ 0xFF for b in blob[middle : middle + 8])
    weights.write_bytes(bytes(blob))  # same size, different weights
    _run(path, tmp_path / "again", cache)
    assert (tmp_path / "again" / "tiny.csv").read_bytes() == (
        tmp_path / "clean" / "tiny.csv"
    ).read_bytes()
    report = (tmp_path / "again" / "tiny.md").read_text()
    assert "of which 2 loaded from the cache" in report
    assert "Damaged cache entries retrained: seed" in report
    assert "SHA-256" in report
    # The entry was overwritten with the right weights: a third run loads all three.
    _run(path, tmp_path / "third", cache)
    third = (tmp_path / "third" / "tiny.md").read_text()
    assert "of which 3 loaded" in third and "Damaged" not in third


def test_empty_weights_file_is_a_repaired_miss(write, tiny_yaml, tmp_path) -> None:
    path = write(tiny_yaml)
    cache = tmp_path / "cache"
    _run(path, tmp_path / "clean", cache)
    sorted(cache.rglob("*.safetensors"))[0].write_bytes(b"")
    _run(path, tmp_path / "again", cache)
    assert (tmp_path / "again" / "tiny.csv").read_bytes() == (
        tmp_path / "clean" / "tiny.csv"
    ).read_bytes()
    assert "Damaged cache entries retrained" in (tmp_path / "again" / "tiny.md").read_text()


def test_metadata_holds_the_weights_hash(write, tiny_yaml, tmp_path) -> None:
    import hashlib

    _run(write(tiny_yaml), tmp_path / "out", tmp_path / "cache")
    for meta in (tmp_path / "cache").rglob("*.json"):
        blob = meta.with_suffix(".safetensors").read_bytes()
        assert json.loads(meta.read_text())["weights_sha256"] == hashlib.sha256(blob).hexdigest()


def test_two_concurrent_runs_train_each_model_once(write, tiny_yaml, tmp_path) -> None:
    slow = tiny_yaml.replace("epochs: 3", "epochs: 30")
    path = write(slow)
    cache = tmp_path / "cache"
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}
    cmd = [sys.executable, "-m", "falsify", "run", str(path), "--cache", str(cache), "--quiet"]
    procs = [
        subprocess.Popen([*cmd, "--out", str(tmp_path / f"o{i}")], env=env, cwd=ROOT)
        for i in range(2)
    ]
    assert [p.wait(timeout=300) for p in procs] == [0, 0]
    reports = [(tmp_path / f"o{i}" / "tiny.md").read_text() for i in range(2)]
    # One run trained all three models; the other waited on their locks and loaded them.
    # (Before the locks, both reported "0 cached": each trained all three.)
    assert sorted("of which 3 loaded" in r for r in reports) == [False, True]
    assert (tmp_path / "o0" / "tiny.csv").read_bytes() == (
        tmp_path / "o1" / "tiny.csv"
    ).read_bytes()
    assert len(list(cache.rglob("*.safetensors"))) == 3


def test_fields_the_optimizer_ignores_leave_the_key_as_it_is() -> None:
    base = replicate_key(recipe_of(POP), 0, CPU)
    adam = POP.model_copy(update={"training": TrainingSpec(epochs=2, momentum=0.5)})
    assert replicate_key(recipe_of(adam), 0, CPU) == base
    sgd = POP.model_copy(update={"training": TrainingSpec(epochs=2, optimizer="sgd")})
    sgd_other = POP.model_copy(
        update={"training": TrainingSpec(epochs=2, optimizer="sgd", momentum=0.5)}
    )
    assert replicate_key(recipe_of(sgd), 0, CPU) != replicate_key(recipe_of(sgd_other), 0, CPU)


def test_missing_ray_is_said_plainly(monkeypatch) -> None:
    import pytest

    from falsify.errors import FalsifyError
    from falsify.runner.executors import RAY_INSTALL_HINT, make_executor

    monkeypatch.setitem(sys.modules, "ray", None)  # import ray now raises ImportError
    with pytest.raises(FalsifyError) as e:
        make_executor("ray", 2)
    assert "Got it missing" not in str(e.value)
    assert "not installed" in str(e.value) and RAY_INSTALL_HINT in str(e.value)
