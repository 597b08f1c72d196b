"""Benchmark: peak memory of ``falsify run`` on a hypothesis file over 50,000 generated images,
with ``population.data.stream: true`` against the same file in memory.

The file (written to a temporary folder) trains an MLP 3072→256→128→10 for ``--steps`` steps on
:mod:`falsify.data.generated_images` (CIFAR-10's size), then runs an association test on
``hidden1`` over the whole training split: each unit's class selectivity against the increase of
the loss when it is ablated (256 single-unit ablations over 50,000 images). Each run is a fresh
process (``python -m falsify run`` on a cold cache) that prints its resident set's high-water
mark (``VmHWM``) when it ends, so the peak counts everything the run touched: Python, torch,
training, the measures, the sweep and the report. A third run of the streamed file on
``--baseline-n`` images gives the fixed cost (libraries, model, report), and the streamed
run's *growth* over it is compared with the ablation engine's memory budget
(``falsify.interventions.engine.DEFAULT_MAX_BYTES``). The runs use glibc's fixed mmap threshold
(``MALLOC_MMAP_THRESHOLD_=131072``; see benchmarks/streaming.py for why). The two runs must write
the same verdict and per-unit table (to ``--tolerance``).

    PYTHONPATH=. python benchmarks/stream_file.py             # 50,000 images (a few minutes)
    PYTHONPATH=. python benchmarks/stream_file.py --n 5000    # a quicker look
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from benchmarks.common import describe_machine
from falsify.interventions.engine import DEFAULT_MAX_BYTES

FILE = """\
id: {id}
claim: More class-selective units of an MLP on generated images matter more.
population:
  data: {{kind: generated_images, n_train: {n}, n_test: 1000{stream}}}
  model: {{kind: mlp, hidden: [256, 128]}}
  training: {{steps: {steps}, batch_size: 128, lr: 0.001}}
  seeds: 2
test:
  kind: association
  layers: [hidden1]
  x: {{kind: class_selectivity}}
  y: {{kind: unit_ablation, metric: loss_increase}}
  split: train
prediction: {{direction: positive, sesoi: 0.1}}
"""

CHILD = (
    "import sys; from falsify.cli.main import main; rc = main(sys.argv[1:]); "
    "print(next(l for l in open('/proc/self/status') if l.startswith('VmHWM'))); sys.exit(rc)"
)


def parse() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--n", type=int, default=50_000, help="training images")
    p.add_argument("--baseline-n", type=int, default=500, help="images of the fixed-cost run")
    p.add_argument("--steps", type=int, default=100, help="training steps (batch 128)")
    p.add_argument("--tolerance", type=float, default=1e-6, help="largest |Δ| of the tables")
    return p.parse_args()


def run(folder: Path, name: str, n: int, stream: bool, steps: int) -> tuple[float, float]:
    """Peak resident set (MiB) and wall seconds of ``falsify run`` on one file, cold cache."""
    path = folder / f"{name}.yaml"
    path.write_text(
        FILE.format(id=name, n=n, steps=steps, stream=", stream: true" if stream else "")
    )
    cmd = [sys.executable, "-c", CHILD, "run", str(path), "--cache", str(folder / f"cache_{name}")]
    cmd += ["--out", str(folder / "out")]
    env = {**os.environ, "MALLOC_MMAP_THRESHOLD_": "131072"}
    start = time.perf_counter()
    done = subprocess.run(cmd, capture_output=True, text=True, env=env, cwd=Path.cwd())
    wall = time.perf_counter() - start
    if done.returncode != 0:
        raise SystemExit(f"{name} failed:\n{done.stdout}\n{done.stderr}")
    line = next(x for x in done.stdout.splitlines() if x.startswith("VmHWM"))
    return int(line.split()[1]) / 1024, wall


def main() -> None:
    args = parse()
    print(describe_machine(torch.device("cpu")))
    budget = DEFAULT_MAX_BYTES / 2**20
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        base, _ = run(folder, "baseline", args.baseline_n, True, args.steps)
        streamed, t_stream = run(folder, "streamed", args.n, True, args.steps)
        memory, t_memory = run(folder, "in_memory", args.n, False, args.steps)
        out = folder / "out"
        verdicts = [
            json.loads((out / f"{k}.json").read_text())["verdict"]
            for k in ("streamed", "in_memory")
        ]
        a, b = (pd.read_csv(out / f"{k}.csv") for k in ("streamed", "in_memory"))
        gap = float(np.abs(a[["x", "y"]].to_numpy() - b[["x", "y"]].to_numpy()).max())
    print(
        f"falsify run, association over {args.n:,} training images ({args.steps} training steps):"
    )
    print(f"  fixed cost ({args.baseline_n} images, streamed): peak {base:8.1f} MiB")
    print(
        f"  streamed:  peak {streamed:8.1f} MiB ({streamed - base:+.1f} over the fixed cost; "
        f"the engine's budget is {budget:.0f} MiB)   {t_stream:6.1f} s"
    )
    print(f"  in memory: peak {memory:8.1f} MiB ({memory - base:+.1f})   {t_memory:6.1f} s")
    print(f"  verdicts {verdicts[0]} / {verdicts[1]}; largest |Δ| of x, y per unit: {gap:.2e}")
    if verdicts[0] != verdicts[1] or gap > args.tolerance:
        raise SystemExit("the streamed run does not write what the in-memory run writes")


if __name__ == "__main__":
    main()
