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
from tests.helpers.populations import TINY_BETWEEN

ROOT = Path(__file__).parents[1]
RAY = Path(sys.executable).with_name("ray")
START_TIMEOUT = 300  # seconds for both nodes to start and join (a loaded machine is slow)
RUN_TIMEOUT = 600  # seconds for one falsify run on the cluster

pytestmark = pytest.mark.slow

# A test cluster on 127.0.0.1 without Ray's token authentication, which `ray start --head`
# switches on by default but a joining node or driver uses only when told to.
_ENV = {
    **os.environ,
    "OMP_NUM_THREADS": "1",
    "RAY_USAGE_STATS_ENABLED": "0",
    "RAY_AUTH_MODE": "disabled",
    "PYTHONPATH": str(ROOT),
}

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
    with (cwd / "node.log").open("wb") as log:
        return subprocess.Popen(
            cmd + args,
            cwd=cwd,
            env=_ENV,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )


def _alive_nodes(address: str) -> int:
    try:
        done = subprocess.run(
            [sys.executable, "-c", _COUNT_NODES, address],
            capture_output=True,
            text=True,
            timeout=60,
            env=_ENV,
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
        proc.wait(timeout=10)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(timeout=30)


def _wait_started(proc: subprocess.Popen[bytes], log: Path, deadline: float) -> None:
    """Until the node says it started; skip where Ray cannot start a node on this machine."""
    while "Ray runtime started" not in log.read_text(errors="replace"):
        tail = log.read_text(errors="replace")[-1500:]
        if proc.poll() is not None:
            pytest.skip(f"Ray cannot start a node on this machine (`ray start` said: {tail})")
        if time.monotonic() > deadline:
            pytest.fail(f"a Ray node did not start within {START_TIMEOUT} s: {tail}")
        time.sleep(0.5)


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
        deadline = time.monotonic() + START_TIMEOUT
        nodes.append(_node(head, base / "h" / "t", base / "h"))
        _wait_started(nodes[0], base / "h" / "node.log", deadline)
        worker = ["--address", address, "--node-ip-address", "127.0.0.1"]
        nodes.append(_node(worker, base / "w" / "t", base / "w"))
        _wait_started(nodes[1], base / "w" / "node.log", deadline)
        while _alive_nodes(address) < 2:
            if time.monotonic() > deadline:
                pytest.fail(f"the two Ray nodes did not both join within {START_TIMEOUT} s")
            time.sleep(1)
        yield address
    finally:
        for proc in reversed(nodes):
            _stop(proc)
        shutil.rmtree(base, ignore_errors=True)


def _cli(paths: list[Path], out: Path, cache: Path, *extra: str) -> None:
    """``falsify run`` in its own process, with a timeout (a hung cluster fails, not hangs)."""
    cmd = [sys.executable, "-m", "falsify", "run", *map(str, paths), "--out", str(out)]
    cmd += ["--cache", str(cache), "--quiet", *extra]
    done = subprocess.run(
        cmd, cwd=ROOT, env=_ENV, capture_output=True, text=True, timeout=RUN_TIMEOUT
    )
    assert done.returncode == 0, done.stdout + done.stderr


# Beside the association file of conftest.py: a sweep of ablations, and a grid of conditions
# (whose CSV holds each model's training loss, as the ensemble trainer of the sequential run and
# the jobs' one-seed trainer both report it).
TARGETED = """\
id: tiny_targeted
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


IDS = ("tiny", "tiny_targeted", "between_tiny")


def test_cluster_run_equals_sequential(cluster, write, tiny_yaml, tmp_path) -> None:
    paths = [write(tiny_yaml, "a.yaml"), write(TARGETED, "t.yaml"), write(TINY_BETWEEN, "b.yaml")]
    files = [str(p) for p in paths]
    seq = ["run", *files, "--out", str(tmp_path / "seq"), "--cache", str(tmp_path / "c1")]
    assert main([*seq, "--quiet"]) == 0
    ray_args = ("--executor", "ray", "--address", cluster, "--jobs", "2")
    _cli(paths, tmp_path / "ray", tmp_path / "c2", *ray_args)
    for hid in IDS:
        # the tidy data, and the estimates, CIs, p-values and verdicts
        for name in (f"{hid}.csv", f"{hid}.parts.csv"):
            want = (tmp_path / "seq" / name).read_bytes()
            assert (tmp_path / "ray" / name).read_bytes() == want, name
        assert "(RayCluster)" in (tmp_path / "ray" / f"{hid}.md").read_text()
    # The caller's cache holds the same models, stored by the caller from the jobs' bytes.
    weights = sorted(p.name for p in (tmp_path / "c1").rglob("*.safetensors"))
    assert len(weights) == 9  # the first two files share one population; 2 conditions × 3
    assert weights == sorted(p.name for p in (tmp_path / "c2").rglob("*.safetensors"))
    for meta in (tmp_path / "c2").rglob("*.json"):
        assert json.loads(meta.read_text())["executor"] == "RayCluster (2 jobs)"
    # Again on the cluster: every model from the cache, evaluated on the nodes again.
    _cli(paths, tmp_path / "again", tmp_path / "c2", *ray_args)
    for hid in IDS:
        want = (tmp_path / "seq" / f"{hid}.csv").read_bytes()
        assert (tmp_path / "again" / f"{hid}.csv").read_bytes() == want
    # falsify disconnected and left the cluster it joined running, with both nodes.
    assert _alive_nodes(cluster) == 2


# In its own process (with a timeout): `falsify run` joins the cluster and leaves it running;
# `falsify.run` leaves a Ray connection its caller made open.
_JOIN = """
import sys, ray, falsify
from falsify.cli.main import main
path, out, cache, address = sys.argv[1:]
args = ["run", path, "--out", out, "--cache", cache, "--quiet", "--executor", "ray"]
assert main([*args, "--address", address, "--jobs", "2"]) == 0
assert not ray.is_initialized(), "falsify did not disconnect"
ray.init(address=address, log_to_driver=False)
falsify.run(path, cache=cache, executor="ray", jobs=2)
assert ray.is_initialized(), "falsify closed its caller's connection"
ray.shutdown()
print("joined and left")
"""


def test_joined_cluster_is_left_running(cluster, write, tiny_yaml, tmp_path) -> None:
    path = write(tiny_yaml)
    cmd = [sys.executable, "-c", _JOIN, str(path), str(tmp_path / "a"), str(tmp_path / "c")]
    done = subprocess.run(
        [*cmd, cluster], cwd=ROOT, env=_ENV, capture_output=True, text=True, timeout=RUN_TIMEOUT
    )
    assert "joined and left" in done.stdout, done.stdout + done.stderr
    assert _alive_nodes(cluster) == 2  # the cluster still runs, with both nodes
