"""A two-node Ray cluster on this machine: results equal a sequential run's, models come back
through the object store into the caller's cache, and falsify leaves a cluster it joined running.

Each node has its own temp folder and working folder, and the jobs are given no path at all: a
trained model reaches the cache only through what the job returns (falsify/runner/executors.py).
Every wait has a timeout, and the fixture stops the nodes it started, by process group.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from falsify.cli.main import main

ROOT = Path(__file__).parents[1]
RAY = Path(sys.executable).with_name("ray")
START_TIMEOUT = 120  # seconds for both nodes to join
RUN_TIMEOUT = 600  # seconds for one falsify run on the cluster

pytestmark = pytest.mark.slow

# Two nodes of one CPU each, as a driver of the cluster sees them; prints the alive node count.
_COUNT_NODES = """
import sys, ray
ray.init(address=sys.argv[1], log_to_driver=False)
print(sum(n["Alive"] for n in ray.nodes()))
ray.shutdown()
"""


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _node(args: list[str], temp: Path, cwd: Path) -> subprocess.Popen[bytes]:
    """A Ray node in the foreground (``--block``) in a session of its own, so stopping its
    process group stops exactly this node."""
    ports = [
        "--node-manager-port", str(_free_port()),
        "--object-manager-port", str(_free_port()),
        "--metrics-export-port", str(_free_port()),
        "--dashboard-agent-listen-port", str(_free_port()),
        "--dashboard-agent-grpc-port", str(_free_port()),
        "--runtime-env-agent-port", str(_free_port()),
    ]  # fmt: skip
    cmd = [str(RAY), "start", "--block", "--num-cpus", "1", "--temp-dir", str(temp), *ports]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "RAY_USAGE_STATS_ENABLED": "0"}
    log = (cwd / "node.log").open("wb")
    return subprocess.Popen(
        cmd + args, cwd=cwd, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
    )


def _alive_nodes(address: str) -> int:
    try:
        done = subprocess.run(
            [sys.executable, "-c", _COUNT_NODES, address],
            capture_output=True,
            text=True,
            timeout=60,
        )
    except subprocess.TimeoutExpired:
        return 0
    lines = done.stdout.split()
    return int(lines[-1]) if done.returncode == 0 and lines else 0


def _stop(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is not None:
        return
    os.killpg(proc.pid, signal.SIGTERM)
    try:
        proc.wait(timeout=30)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(timeout=30)


@pytest.fixture(scope="module")
def cluster() -> Iterator[str]:
    """The address of a running head node (1 CPU) joined by a second node (1 CPU)."""
    pytest.importorskip("ray")
    if not RAY.exists():
        pytest.skip(f"no ray command beside {sys.executable}")
    # Short folders: Ray's unix sockets live under the temp folder (a path of ≤ 107 bytes).
    base = Path(tempfile.mkdtemp(prefix="rc", dir="/tmp"))
    nodes: list[subprocess.Popen[bytes]] = []
    try:
        for name in ("h", "w"):
            (base / name / "t").mkdir(parents=True)
        port = _free_port()
        address = f"127.0.0.1:{port}"
        head = ["--head", "--port", str(port), "--node-ip-address", "127.0.0.1"]
        head += ["--include-dashboard", "false"]
        nodes.append(_node(head, base / "h" / "t", base / "h"))
        deadline = time.monotonic() + START_TIMEOUT
        while _alive_nodes(address) < 1:
            if nodes[0].poll() is not None or time.monotonic() > deadline:
                log = (base / "h" / "node.log").read_text(errors="replace")[-2000:]
                pytest.skip(f"a Ray head node does not start on this machine: {log}")
            time.sleep(1)
        worker = ["--address", address, "--node-ip-address", "127.0.0.1"]
        nodes.append(_node(worker, base / "w" / "t", base / "w"))
        while _alive_nodes(address) < 2:
            if nodes[1].poll() is not None or time.monotonic() > deadline:
                log = (base / "w" / "node.log").read_text(errors="replace")[-2000:]
                pytest.skip(f"a second Ray node does not join on this machine: {log}")
            time.sleep(1)
        yield address
    finally:
        for proc in reversed(nodes):
            _stop(proc)
        shutil.rmtree(base, ignore_errors=True)


def _cli(path: Path, out: Path, cache: Path, *extra: str) -> None:
    """``falsify run`` in its own process, with a timeout (a hung cluster fails, not hangs)."""
    cmd = [sys.executable, "-m", "falsify", "run", str(path), "--out", str(out)]
    cmd += ["--cache", str(cache), "--quiet", *extra]
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}
    done = subprocess.run(
        cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=RUN_TIMEOUT
    )
    assert done.returncode == 0, done.stdout + done.stderr


TARGETED = """\
id: tiny
claim: Selective units matter more when ablated (a fast test population).
population:
  data: {kind: digits}
  model: {kind: mlp, hidden: [16]}
  training: {epochs: 3, batch_size: 128, lr: 0.01}
  seeds: 3
test:
  kind: targeted
  layers: [hidden1]
  scores: [{kind: class_selectivity}]
  k: [2, 4]
  draws: 3
prediction:
  direction: positive
  sesoi: 0.01
"""


@pytest.mark.parametrize("text", ["association", "targeted"])
def test_cluster_run_equals_sequential(cluster, write, tiny_yaml, tmp_path, text) -> None:
    path = write(tiny_yaml if text == "association" else TARGETED)
    _cli(path, tmp_path / "seq", tmp_path / "c1", "--jobs", "1")
    ray_args = ("--executor", "ray", "--address", cluster, "--jobs", "2")
    _cli(path, tmp_path / "ray", tmp_path / "c2", *ray_args)
    seq_csv = (tmp_path / "seq" / "tiny.csv").read_bytes()
    assert (tmp_path / "ray" / "tiny.csv").read_bytes() == seq_csv
    # the estimates, CIs, p-values and verdicts
    parts = (tmp_path / "seq" / "tiny.parts.csv").read_bytes()
    assert (tmp_path / "ray" / "tiny.parts.csv").read_bytes() == parts
    report = (tmp_path / "ray" / "tiny.md").read_text()
    assert "(RayCluster)" in report
    # The caller's cache holds the same models, stored by the caller from the jobs' bytes.
    weights = sorted(p.name for p in (tmp_path / "c1").rglob("*.safetensors"))
    assert weights == sorted(p.name for p in (tmp_path / "c2").rglob("*.safetensors"))
    for meta in (tmp_path / "c2").rglob("*.json"):
        assert json.loads(meta.read_text())["executor"] == "RayCluster (2 jobs)"
    # Again on the cluster: every model from the cache, evaluated on the nodes again.
    _cli(path, tmp_path / "again", tmp_path / "c2", *ray_args)
    assert (tmp_path / "again" / "tiny.csv").read_bytes() == seq_csv
    # falsify disconnected and left the cluster it joined running, with both nodes.
    assert _alive_nodes(cluster) == 2


def test_joined_cluster_is_left_running(cluster, write, tiny_yaml, tmp_path) -> None:
    import ray

    import falsify

    path = write(tiny_yaml)
    main(["run", str(path), "--out", str(tmp_path / "a"), "--cache", str(tmp_path / "c"),
          "--quiet", "--executor", "ray", "--address", cluster, "--jobs", "2"])  # fmt: skip
    assert not ray.is_initialized()  # disconnected ...
    assert _alive_nodes(cluster) == 2  # ... from a cluster still running
    # A connection the caller made is the caller's: falsify neither closes nor replaces it.
    ray.init(address=cluster, log_to_driver=False)
    try:
        falsify.run(path, cache=tmp_path / "c", executor="ray", jobs=2)
        assert ray.is_initialized()
    finally:
        ray.shutdown()
