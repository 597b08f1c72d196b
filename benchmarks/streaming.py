"""Benchmark: an ablation sweep over 50,000 CIFAR-10-sized images, streamed against in memory.

The images are :mod:`falsify.data.generated_images` (``[3, 32, 32]``, 10 classes, made per index
from a seed). An MLP is trained on the streamed training split (a few hundred steps, which also
checks that streamed and in-memory training give the same weights), then every unit of one
layer is ablated over all 50,000 training images two ways, each in a fresh process:

* **in memory**: ``GeneratedImagesData.load()`` (every image in one float32 tensor, 614 MB at
  the default size) and :func:`falsify.interventions.ablation_effects` on it;
* **streamed**: ``ablation_effects`` on ``GeneratedImagesData.streamed().train`` with a memory
  budget (``--budget-mib``): the examples are read in blocks that fit it.

Peak memory is the growth of the process's resident set over its size before the block
(after a sweep of 64 images that loads the libraries' code and buffers),
from the kernel's high-water mark (``VmHWM``, reset through ``/proc/self/clear_refs``:
:class:`benchmarks.common.PeakMemory`); it counts everything the process touches, so it is an
upper bound on the tensors' needs. The children run with glibc's mmap threshold fixed
(``MALLOC_MMAP_THRESHOLD_=131072``) unless ``--glibc-default``: glibc's dynamic threshold keeps
freed blocks of up to 32 MiB resident in a fragmenting heap, which the high-water mark then
counts as if the sweep held them. Prints the budget, both peaks, both times, and the largest
difference of the effects (the run fails if it is above ``--tolerance``). It also times one
pass over an in-memory tensor by slicing against a ``DataLoader`` over a ``TensorDataset``,
the cost of making the in-memory case a loader too.

    PYTHONPATH=. python benchmarks/streaming.py                 # 50,000 images (minutes)
    PYTHONPATH=. python benchmarks/streaming.py --n 5000        # a quicker look
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

import torch

from benchmarks.common import PeakMemory, describe_machine
from falsify.data.generated_images import GeneratedImagesData
from falsify.data.stream import batches
from falsify.hypothesis.schema import Population, TrainingSpec
from falsify.interventions import ablation_effects, single_unit_masks
from falsify.models import build_model
from falsify.models.mlp import MLPSpec
from falsify.models.training import train_replicate

CPU = torch.device("cpu")


def parse() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--n", type=int, default=50_000, help="training images swept")
    p.add_argument("--hidden", type=int, nargs="+", default=[256, 128])
    p.add_argument("--layer", default="hidden1")
    p.add_argument("--steps", type=int, default=200, help="training steps (batch 128)")
    p.add_argument("--budget-mib", type=float, default=64.0, help="the streamed sweep's budget")
    p.add_argument("--tolerance", type=float, default=1e-6, help="largest |Δ effect| allowed")
    p.add_argument(
        "--glibc-default",
        action="store_true",
        help="keep glibc's dynamic mmap threshold (its freed blocks then count in the peak)",
    )
    p.add_argument("--child", choices=["memory", "stream"], help=argparse.SUPPRESS)
    p.add_argument("--weights", help=argparse.SUPPRESS)
    return p.parse_args()


def population(args: argparse.Namespace) -> Population:
    return Population(
        data=GeneratedImagesData(kind="generated_images", n_train=args.n, n_test=1000),
        model=MLPSpec(kind="mlp", hidden=tuple(args.hidden)),
        training=TrainingSpec(steps=args.steps, batch_size=128, lr=0.001),
        seeds=2,
    )


def child(args: argparse.Namespace) -> None:
    """One sweep in this fresh process; prints a JSON line of its peak, time and effects."""
    pop = population(args)
    spec = pop.data
    torch.manual_seed(0)
    model = build_model(pop.model, (3, 32, 32), 10)
    model.load_state_dict(torch.load(args.weights, weights_only=True))
    masks = single_unit_masks(args.hidden[int(args.layer.removeprefix("hidden")) - 1])
    # A sweep of 64 images first, outside the measurement, so that the libraries' code and
    # buffers (oneDNN's, the allocator's) are in place and only the sweep's own memory counts.
    warm = GeneratedImagesData(kind="generated_images", n_train=64, n_test=10).streamed().train
    ablation_effects(model, args.layer, warm, None, masks)
    peak = PeakMemory(CPU)
    start = time.perf_counter()
    with peak.measure():
        if args.child == "memory":
            data = spec.load()  # type: ignore[union-attr]
            effects = ablation_effects(model, args.layer, data.x_train, data.y_train, masks)
        else:
            train = spec.streamed().train  # type: ignore[union-attr]
            budget = int(args.budget_mib * 2**20)
            effects = ablation_effects(model, args.layer, train, None, masks, max_bytes=budget)
    wall = time.perf_counter() - start
    print(json.dumps({"peak": peak.bytes, "wall": wall, "effects": effects.tolist()}))


def run_child(which: str, weights: Path, glibc_default: bool) -> dict:
    argv = [a for a in sys.argv[1:] if not a.startswith("--child")]
    cmd = [sys.executable, __file__, *argv, "--child", which, "--weights", str(weights)]
    # glibc raises its mmap threshold each time a large block is freed (up to 32 MiB), after
    # which freed blocks stay in the heap, resident, and the heap fragments; a fixed threshold
    # returns every block over 128 KiB to the kernel when freed, so the peak is the tensors'.
    env = dict(os.environ) if glibc_default else {**os.environ, "MALLOC_MMAP_THRESHOLD_": "131072"}
    out = subprocess.run(cmd, capture_output=True, text=True, check=True, cwd=Path.cwd(), env=env)
    return json.loads(out.stdout.strip().splitlines()[-1])


def loader_overhead(n: int) -> tuple[float, float]:
    """Seconds of one pass over ``n`` in-memory images in batches of 1,024: slicing the tensor,
    and a ``DataLoader`` over a ``TensorDataset`` (items fetched one by one and stacked)."""
    x, y = torch.rand(n, 3, 32, 32), torch.randint(0, 10, (n,))
    times = []
    for source in ((x, y), torch.utils.data.TensorDataset(x, y)):
        start = time.perf_counter()
        for xb, _ in batches(source, 1024):
            xb.sum()
        times.append(time.perf_counter() - start)
    return times[0], times[1]


def main() -> None:
    args = parse()
    if args.child:
        child(args)
        return
    print(describe_machine(CPU))
    pop = population(args)
    spec = pop.data
    start = time.perf_counter()
    streamed = train_replicate(pop, spec.streamed(), 0, CPU)  # type: ignore[union-attr]
    t_stream = time.perf_counter() - start
    small = population(argparse.Namespace(**{**vars(args), "n": 2000}))
    in_memory = small.data.load()  # type: ignore[union-attr]
    start = time.perf_counter()
    a = train_replicate(small, in_memory, 0, CPU)
    t_a = time.perf_counter() - start
    start = time.perf_counter()
    b = train_replicate(small, small.data.streamed(), 0, CPU)  # type: ignore[union-attr]
    t_b = time.perf_counter() - start
    same = all(
        torch.equal(p, q) for p, q in zip(a.model.parameters(), b.model.parameters(), strict=True)
    )
    print(
        f"training: {args.steps} steps on {args.n:,} streamed images in {t_stream:.1f} s, "
        f"test accuracy {streamed.test_accuracy:.3f}; on 2,000 images, in memory {t_a:.1f} s "
        f"(loaded), streamed {t_b:.1f} s (×{t_b / t_a:.2f}), weights "
        f"{'bit-identical' if same else 'DIFFER'}"
    )
    with tempfile.TemporaryDirectory() as tmp:
        weights = Path(tmp) / "mlp.pt"
        torch.save(streamed.model.state_dict(), weights)
        memory = run_child("memory", weights, args.glibc_default)
        stream = run_child("stream", weights, args.glibc_default)
    diff = (torch.tensor(memory["effects"]) - torch.tensor(stream["effects"])).abs().max().item()
    mib = 2**20
    malloc = "glibc's default" if args.glibc_default else "MALLOC_MMAP_THRESHOLD_=131072"
    print(
        f"sweep of {args.layer} ({len(memory['effects'])} units) over {args.n:,} images ({malloc}):"
    )
    print(f"  in memory: peak {memory['peak'] / mib:8.1f} MiB   {memory['wall']:7.1f} s")
    print(
        f"  streamed:  peak {stream['peak'] / mib:8.1f} MiB   {stream['wall']:7.1f} s   "
        f"(budget {args.budget_mib:.0f} MiB; time ×{stream['wall'] / memory['wall']:.2f})"
    )
    print(f"  largest |Δ effect| streamed vs in memory: {diff:.2e}")
    sliced, loaded = loader_overhead(min(args.n, 20_000))
    print(
        f"one pass over {min(args.n, 20_000):,} in-memory images: slicing {sliced:.3f} s, "
        f"DataLoader over TensorDataset {loaded:.3f} s (×{loaded / sliced:.0f})"
    )
    assert diff <= args.tolerance, f"streamed effects differ by {diff:.2e}"
    if not args.glibc_default:
        assert stream["peak"] <= args.budget_mib * mib, "the streamed sweep went over its budget"


if __name__ == "__main__":
    main()
