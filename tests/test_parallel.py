"""Parallel and distributed replicates, and runs killed half-way."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from falsify.cli.main import main
from falsify.errors import FalsifyError

ROOT = Path(__file__).parents[1]


def _run(path: Path, out: Path, cache: Path, *extra: str) -> None:
    assert (
        main(["run", str(path), "--out", str(out), "--cache", str(cache), "--quiet", *extra]) == 0
    )


def test_parallel_run_equals_sequential(write, tiny_yaml, tmp_path) -> None:
    # A term that reads the weights keeps the recipe off the ensemble trainer, so '--jobs 2'
    # does use the pool.
    path = write(tiny_yaml.replace("lr: 0.01}", "lr: 0.01, enmeshment: {lam: 0.1, k: 2}}"))
    _run(path, tmp_path / "seq", tmp_path / "c1")
    _run(path, tmp_path / "par", tmp_path / "c2", "--jobs", "2")
    assert (tmp_path / "par" / "tiny.csv").read_bytes() == (
        tmp_path / "seq" / "tiny.csv"
    ).read_bytes()
    assert "training jobs: 2 (LocalPool)" in (tmp_path / "par" / "tiny.md").read_text()
    # Both caches hold the same models under the same keys.
    names = sorted(p.name for p in (tmp_path / "c1").rglob("*.safetensors"))
    assert names == sorted(p.name for p in (tmp_path / "c2").rglob("*.safetensors"))
    # The metadata names where each model was trained.
    meta = [json.loads(p.read_text()) for p in (tmp_path / "c2").rglob("*.json")]
    assert {(m["trainer"], m["executor"]) for m in meta} == {("sequential", "LocalPool (2 jobs)")}


def test_jobs_train_an_ensemble_recipe_in_process(write, tiny_yaml, tmp_path) -> None:
    # A process per job is slower than one ensemble here (docs/reports.md, "Parallel training").
    _run(write(tiny_yaml), tmp_path / "par", tmp_path / "c", "--jobs", "2")
    meta = [json.loads(p.read_text()) for p in (tmp_path / "c").rglob("*.json")]
    assert {(m["trainer"], m["executor"]) for m in meta} == {("ensemble", "in-process")}


def test_ray_executor_equals_sequential(write, tiny_yaml, tmp_path) -> None:
    pytest.importorskip("ray")
    import ray

    path = write(tiny_yaml)
    _run(path, tmp_path / "seq", tmp_path / "c1")
    try:
        _run(path, tmp_path / "ray", tmp_path / "c2", "--jobs", "2", "--executor", "ray")
        # The Ray instance falsify started is shut down after the run.
        assert not ray.is_initialized()
    finally:
        ray.shutdown()
    assert (tmp_path / "ray" / "tiny.csv").read_bytes() == (
        tmp_path / "seq" / "tiny.csv"
    ).read_bytes()
    # Trained on Ray's workers, stored into this cache by this process (tests/test_ray_cluster.py
    # runs the same on two nodes).
    meta = [json.loads(p.read_text()) for p in (tmp_path / "c2").rglob("*.json")]
    assert {m["executor"] for m in meta} == {"RayCluster (2 jobs)"}


def _processes_naming(text: str) -> list[int]:
    """The ids of this machine's processes whose command line contains ``text``."""
    out = []
    for proc in Path("/proc").glob("[0-9]*"):
        try:
            if text.encode() in (proc / "cmdline").read_bytes():
                out.append(int(proc.name))
        except OSError:
            continue
    return out


@pytest.mark.skipif(not Path("/proc/self/cmdline").exists(), reason="reads /proc")
def test_ray_instance_started_is_shut_down_and_job_errors_arrive_plain() -> None:
    pytest.importorskip("ray")
    import ray

    from falsify.runner.executors import make_executor

    pool = make_executor("ray", 1)
    try:
        gcs = ray.get_runtime_context().gcs_address
        assert _processes_naming(gcs)  # the raylet of the instance it started
        # A job's bad-input error arrives as itself (its one-line message), not wrapped by Ray.
        with pytest.raises(FalsifyError, match=r"^The '--jobs' must be at least 1"):
            list(pool.map(make_executor, [("local", 0)]))
    finally:
        pool.close()
    assert not ray.is_initialized()
    deadline = time.monotonic() + 30
    while _processes_naming(gcs) and time.monotonic() < deadline:
        time.sleep(0.2)
    assert not _processes_naming(gcs)


def test_killed_run_leaves_whole_cache_and_resumes(write, tiny_yaml, tmp_path) -> None:
    # A term that reads the weights keeps training sequential (one model at a time, not one
    # stacked ensemble saved at the end): kills land between saves.
    slow = (
        tiny_yaml.replace("seeds: 3", "seeds: 8")
        .replace("epochs: 3", "epochs: 40")
        .replace("lr: 0.01}", "lr: 0.01, enmeshment: {lam: 0.1, k: 2}}")
    )
    path = write(slow)
    out, cache = tmp_path / "out", tmp_path / "cache"
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    cmd = [
        sys.executable,
        "-m",
        "falsify",
        "run",
        str(path),
        "--out",
        str(out),
        "--cache",
        str(cache),
        "--quiet",
    ]
    proc = subprocess.Popen(cmd, env=env, cwd=ROOT, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and len(list(cache.rglob("*.json"))) < 2:
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    finished = list(cache.rglob("*.json"))
    assert 2 <= len(finished) < 8, "the kill should land mid-run"
    assert not (out / "tiny.md").exists()  # no half-written report
    # Every entry whose metadata exists is whole and loads.
    for meta in finished:
        assert meta.with_suffix(".safetensors").stat().st_size > 0
    _run(path, out, cache)
    report = (out / "tiny.md").read_text()
    hits = len(finished)
    assert (
        f"of which {hits} loaded from the cache" in report
        or f"of which {hits + 1} loaded" in report
    )
    _run(path, tmp_path / "clean", tmp_path / "clean_cache")
    assert (out / "tiny.csv").read_bytes() == (tmp_path / "clean" / "tiny.csv").read_bytes()


def test_a_remote_job_returns_the_checkpoints_with_the_model(tmp_path) -> None:
    # The entry point a Ray job runs: no path in, every cache entry out (checkpoints first).
    import torch

    from falsify.data import load_dataset
    from falsify.data.digits import DigitsData
    from falsify.hypothesis.schema import Population, TrainingSpec
    from falsify.models.mlp import MLPSpec
    from falsify.runner.cache import ModelCache, checkpoint_key, replicate_key
    from falsify.runner.replicates import recipe_of, train_to_bytes, train_to_cache

    spec = TrainingSpec.model_validate({"epochs": 2, "batch_size": 128, "checkpoint_epochs": [1]})
    model = MLPSpec(kind="mlp", hidden=(8,))
    pop = Population(data=DigitsData(kind="digits"), model=model, training=spec, seeds=2)
    data, cpu = load_dataset(pop.data), torch.device("cpu")
    entries = train_to_bytes(pop.model_dump(mode="json"), 0, "cpu", data, 1, "test")
    recipe = recipe_of(pop)
    keys = [checkpoint_key(recipe, 1, 0, cpu), replicate_key(recipe, 0, cpu)]
    assert [key for key, _, _ in entries] == keys
    # The same files as a job that writes to the cache itself.
    train_to_cache(pop.model_dump(mode="json"), 0, "cpu", str(tmp_path), 1)
    for key, blob, _ in entries:
        weights = next(tmp_path.rglob(f"{key}.safetensors"))
        assert weights.read_bytes() == blob and ModelCache(tmp_path).verified(key)
