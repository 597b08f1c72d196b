"""Benchmark 6: issue 14's GPU measurements, in one run on a machine with a CUDA GPU.

(a) a resnet20 population of ``--seeds`` seeds trained for ``--epochs`` on data of CIFAR-10's
    size (``generated_images``: 50,000 × 3 × 32 × 32, docs/performance.md), one seed after
    another (:func:`falsify.models.training.train_replicate`) against the stacked ensemble
    (:func:`falsify.models.ensemble.train_ensemble`), with how far the ensemble's weights are
    from the sequential ones;
(b) a per-channel ablation sweep of one resnet20 block (``--layer``) over ``--sweep-inputs``
    test images: the engine against captum's ``LayerFeatureAblation`` at its best
    ``perturbations_per_eval`` (the candidates are timed on a few channels first), and the
    engine on the GPU against the engine on the CPU on the first 1,000 inputs;
(c) one bundled claim end to end, cold, ``--device cuda`` against ``--device cpu``.

Prints every number with the GPU's name and writes them to ``--out``/gpu.json.

    PYTHONPATH=. python benchmarks/gpu.py --out /tmp/gpu
    PYTHONPATH=. python benchmarks/gpu.py --device cpu --n-train 2000 --n-test 500 \
        --sweep-inputs 500 --claim-jobs 2    # a dry run of the script on a CPU

benchmarks/gpu_check.sh runs it after the CUDA tests.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import torch

from benchmarks.ablation_sweep import captum_effects
from benchmarks.common import describe_machine, timed
from falsify.data.generated_images import GeneratedImagesData
from falsify.hypothesis.schema import Population, TrainingSpec
from falsify.interventions import ablation_effects, fill_values, single_unit_masks
from falsify.models import build_model
from falsify.models.ensemble import train_ensemble
from falsify.models.resnet import ResNet20Spec
from falsify.models.training import TrainResult, train_replicate


def parse() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--device", default="cuda")
    p.add_argument("--out", type=Path, default=Path("gpu-benchmark"))
    p.add_argument("--seeds", type=int, default=5)
    p.add_argument("--epochs", type=int, default=1)
    p.add_argument("--batch-size", type=int, default=128)
    p.add_argument("--n-train", type=int, default=50_000)
    p.add_argument("--n-test", type=int, default=10_000)
    p.add_argument("--layer", default="layer2.1")
    p.add_argument("--sweep-inputs", type=int, default=10_000)
    p.add_argument("--ppe", type=int, nargs="+", default=[1, 2, 4, 8])
    p.add_argument("--calibrate-units", type=int, default=4)
    p.add_argument(
        "--claim",
        type=Path,
        default=Path("hypotheses/batchnorm_reduces_single_direction_reliance.yaml"),
    )
    p.add_argument("--claim-jobs", type=int, default=8, help="--jobs of the CPU run of (c)")
    return p.parse_args()


def synced(device: torch.device, fn: Any) -> Any:
    """``fn`` with the device's queue drained before it returns, so wall times are whole."""

    def call() -> Any:
        out = fn()
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        return out

    return call


def largest_difference(a: list[TrainResult], b: list[TrainResult]) -> tuple[float, int]:
    """Largest absolute difference in weights and buffers, and how many models are identical."""
    worst, same = 0.0, 0
    for ra, rb in zip(a, b, strict=True):
        sa, sb = ra.model.state_dict(), rb.model.state_dict()
        worst = max(worst, *((sa[k].double() - sb[k].double()).abs().max().item() for k in sa))
        same += all(torch.equal(sa[k], sb[k]) for k in sa)
    return worst, same


def population(args: argparse.Namespace, data: GeneratedImagesData) -> Population:
    return Population(
        data=data,
        model=ResNet20Spec(kind="resnet20"),
        training=TrainingSpec(epochs=args.epochs, batch_size=args.batch_size),
        seeds=args.seeds,
    )


def train(args: argparse.Namespace, device: torch.device, results: dict) -> torch.nn.Module:
    spec = GeneratedImagesData(kind="generated_images", n_train=args.n_train, n_test=args.n_test)
    start = time.perf_counter()
    data = spec.load()
    print(
        f"generated {args.n_train:,} + {args.n_test:,} images in {time.perf_counter() - start:.1f} s"
    )
    pop = population(args, spec)
    seeds = list(range(args.seeds))
    seq_t, seq = timed(
        synced(device, lambda: [train_replicate(pop, data, s, device) for s in seeds]), 1
    )
    ens_t, ens = timed(synced(device, lambda: train_ensemble(pop, data, seeds, device)), 1)
    worst, same = largest_difference(seq, ens)
    row = {
        "seeds": args.seeds,
        "epochs": args.epochs,
        "sequential_s": seq_t.median,
        "ensemble_s": ens_t.median,
        "ratio": seq_t.median / ens_t.median,
        "max_weight_difference": worst,
        "identical_models": same,
        "test_accuracy_sequential": [r.test_accuracy for r in seq],
        "test_accuracy_ensemble": [r.test_accuracy for r in ens],
    }
    results["a_training"] = row
    print(
        f"(a) resnet20, {args.seeds} seeds × {args.epochs} epoch(s) on {args.n_train:,} images: "
        f"sequential {seq_t.median:.1f} s, ensemble {ens_t.median:.1f} s "
        f"(×{row['ratio']:.2f}); weights: {same}/{args.seeds} identical, largest difference "
        f"{worst:.2e}; test accuracy {[round(a, 3) for a in row['test_accuracy_sequential']]}"
    )
    results["_data"] = data
    return seq[0].model.eval()


def sweep(
    args: argparse.Namespace, device: torch.device, model: torch.nn.Module, results: dict
) -> None:
    data = results.pop("_data")
    x, y = data.x_test[: args.sweep_inputs].to(device), data.y_test[: args.sweep_inputs].to(device)
    n_units = fill_values(model, args.layer, x[:1], "zero").shape[0]
    masks = single_unit_masks(n_units, device=device)
    kwargs = {"value": "zero", "metric": "loss_increase"}

    def engine() -> torch.Tensor:
        return ablation_effects(model, args.layer, x, y, masks, **kwargs).double().cpu()

    engine()  # warm-up: allocator and kernel selection are not the sweep's
    eng_t, ours = timed(synced(device, engine), 3)
    speed = {}
    for k in args.ppe:
        t, _ = timed(
            synced(
                device,
                lambda k=k: captum_effects(
                    model,
                    args.layer,
                    x,
                    y,
                    n_units,
                    args.calibrate_units,
                    "zero",
                    "loss_increase",
                    k,
                ),
            ),
            1,
        )
        speed[k] = t.median
    best = min(speed, key=speed.__getitem__)
    cap_t, theirs = timed(
        synced(
            device,
            lambda: captum_effects(
                model, args.layer, x, y, n_units, n_units, "zero", "loss_increase", best
            ),
        ),
        1,
    )
    # The same sweep on the CPU, on the first 1,000 inputs.
    cpu_model = build_model(ResNet20Spec(kind="resnet20"), data.input_shape, data.n_classes)
    cpu_model.load_state_dict({k: v.cpu() for k, v in model.state_dict().items()})
    cpu_model.eval()
    head = min(1000, len(x))
    on_cpu = ablation_effects(
        cpu_model, args.layer, x[:head].cpu(), y[:head].cpu(), masks.cpu(), **kwargs
    )
    on_dev = ablation_effects(model, args.layer, x[:head], y[:head], masks, **kwargs).cpu()
    row = {
        "layer": args.layer,
        "channels": n_units,
        "inputs": len(x),
        "engine_s": eng_t.median,
        "captum_best_ppe": best,
        "captum_calibration_s": speed,
        "captum_s": cap_t.median,
        "ratio": cap_t.median / eng_t.median,
        "max_difference_vs_captum": (theirs - ours).abs().max().item(),
        "max_difference_device_vs_cpu": (on_dev.double() - on_cpu.double()).abs().max().item(),
    }
    results["b_sweep"] = row
    print(
        f"(b) resnet20 {args.layer}, {n_units} channels × {len(x):,} inputs: engine "
        f"{eng_t.median:.2f} s, captum (best ppe={best}) {cap_t.median:.2f} s "
        f"(×{row['ratio']:.1f}); |Δ| vs captum {row['max_difference_vs_captum']:.1e}, "
        f"device vs CPU {row['max_difference_device_vs_cpu']:.1e}"
    )


def claim(args: argparse.Namespace, device: torch.device, results: dict) -> None:
    rows = {}
    runs: list[tuple[str, list[str]]] = [(device.type, [])]
    if device.type != "cpu":
        runs.append(("cpu", ["--jobs", str(args.claim_jobs)]))
    for name, extra in runs:
        with tempfile.TemporaryDirectory() as cache:
            cmd = [sys.executable, "-m", "falsify", "run", str(args.claim), "--cache", cache]
            cmd += ["--out", str(args.out / f"reports-{name}"), "--quiet", "--device", name, *extra]
            start = time.perf_counter()
            done = subprocess.run(cmd, capture_output=True, text=True, check=False)
            seconds = time.perf_counter() - start
        line = (done.stdout.strip().splitlines() or [done.stderr.strip()[-300:]])[-1]
        rows[name] = {"seconds": seconds, "exit": done.returncode, "line": line, "args": extra}
        print(
            f"(c) {args.claim.name} cold, --device {name} {' '.join(extra)}: {seconds:.1f} s: {line}"
        )
    results["c_claim"] = rows


def main() -> None:
    args = parse()
    device = torch.device(args.device)
    args.out.mkdir(parents=True, exist_ok=True)
    results: dict[str, Any] = {"machine": describe_machine(device)}
    if device.type == "cuda":
        results["gpu"] = torch.cuda.get_device_name(device)
    print(f"# GPU benchmark: {results['machine']}")
    model = train(args, device, results)
    sweep(args, device, model, results)
    claim(args, device, results)
    (args.out / "gpu.json").write_text(json.dumps(results, indent=2, default=str) + "\n")


if __name__ == "__main__":
    main()
