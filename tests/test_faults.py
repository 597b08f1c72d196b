"""Runs killed (SIGKILL) at random moments: every rerun ends as a clean run, nothing partial shows.

A small real hypothesis (a 16-unit MLP on digits, 3 seeds) runs in a subprocess that is killed
at a random moment of its run: while it trains, while it writes the cache, while it writes the
reports. Then the published files must all be whole, and a rerun must give the clean run's
numbers byte for byte and leave no temporary file. ``FALSIFY_FAULT_LOOPS`` sets the number of
kills (10 by default); ``FALSIFY_FAULT_SEED`` the random moments.
"""

from __future__ import annotations

import hashlib
import json
import os
import random
import signal
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import pytest

from falsify.cli.main import main

ROOT = Path(__file__).parents[1]
LOOPS = int(os.environ.get("FALSIFY_FAULT_LOOPS", "10"))
SEED = int(os.environ.get("FALSIFY_FAULT_SEED", "0"))
RESULTS = ("tiny.csv", "tiny.parts.csv")


def _command(path: Path, out: Path, cache: Path) -> list[str]:
    run = ["run", str(path), "--out", str(out), "--cache", str(cache), "--quiet"]
    return [sys.executable, "-m", "falsify", *run]


def _temporaries(folder: Path) -> list[Path]:
    """Hidden files and folders: temporary files and staging folders a killed run left."""
    return list(folder.rglob(".*"))


def _check_published(cache: Path, out: Path, clean: Path) -> str:
    """Assert every visible file is whole; return the phase the kill landed in."""
    entries = list(cache.rglob("*.json"))
    for meta in entries:
        weights = meta.with_suffix(".safetensors")
        digest = hashlib.sha256(weights.read_bytes()).hexdigest()
        assert json.loads(meta.read_text())["weights_sha256"] == digest, meta
    reports = [p for p in out.glob("*") if not p.name.startswith(".")] if out.exists() else []
    for name in RESULTS:
        if (out / name).exists():
            assert (out / name).read_bytes() == (clean / name).read_bytes(), name
    if reports:
        return "reports"
    return "cache" if entries else "training"


@pytest.mark.slow
def test_killed_runs_rerun_to_the_clean_result(write, tiny_yaml, tmp_path) -> None:
    # A term that reads the weights keeps training sequential, so kills also land between the
    # cache writes.
    path = write(
        tiny_yaml.replace("epochs: 3", "epochs: 15").replace(
            "lr: 0.01}", "lr: 0.01, enmeshment: {lam: 0.1, k: 2}}"
        )
    )
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}
    clean = tmp_path / "clean"
    start = time.monotonic()
    subprocess.run(
        _command(path, clean, tmp_path / "clean_cache"),
        env=env,
        cwd=ROOT,
        check=True,
        stdout=subprocess.DEVNULL,
    )
    full = time.monotonic() - start
    rng = random.Random(SEED)
    phases: Counter[str] = Counter()
    for loop in range(LOOPS):
        out, cache = tmp_path / f"out{loop}", tmp_path / f"cache{loop}"
        proc = subprocess.Popen(
            _command(path, out, cache),
            env=env,
            cwd=ROOT,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        try:
            proc.wait(timeout=rng.uniform(0.4, 1.0) * full)
        except subprocess.TimeoutExpired:
            proc.send_signal(signal.SIGKILL)
        proc.wait()
        phases[_check_published(cache, out, clean) if proc.returncode else "finished"] += 1
        assert main(["run", str(path), "--out", str(out), "--cache", str(cache), "--quiet"]) == 0
        for name in RESULTS:
            assert (out / name).read_bytes() == (clean / name).read_bytes(), (loop, name)
        assert not _temporaries(cache) and not _temporaries(out), loop
    print(f"{LOOPS} kills in {time.monotonic() - start:.0f} s (clean run {full:.1f} s): {phases}")
