"""Benchmark 1: ablate each unit of a layer (MLP, cnn or resnet20), over all 1,797 digits.

Compares, in one run and on the same trained model:

* falsify's engine (:func:`falsify.interventions.ablation_effects`, ``strategy=auto``),
* the plain hook loop (one hooked forward of the whole model per unit, ``batched=False``),
* captum's ``LayerFeatureAblation`` with ``perturbations_per_eval=1`` (a scalar forward, as
  tests/test_ablation.py uses it) and with its best ``perturbations_per_eval`` (a per-example
  forward; the candidates are timed on a few units first and the fastest is run in full).

Prints each method's time, its ratio to the engine, the largest absolute difference of its
effects from the engine's, and the peak memory of the engine's sweep against its chunk budget.

    PYTHONPATH=. python benchmarks/ablation_sweep.py            # the full sweep (minutes)
    PYTHONPATH=. python benchmarks/ablation_sweep.py --units 128 # a quicker look
    PYTHONPATH=. python benchmarks/ablation_sweep.py --model cnn --layer conv1
    PYTHONPATH=. python benchmarks/ablation_sweep.py --model resnet20 --layer layer2.1

The run fails (AssertionError) if any method's effects differ from the engine's by more than
``--tolerance``.
"""

from __future__ import annotations

import argparse

import torch
from captum.attr import LayerFeatureAblation
from torch.nn import functional as F

from benchmarks.common import PeakMemory, Timing, all_digits, describe_machine, timed
from falsify.data import load_dataset
from falsify.data.digits import DigitsData
from falsify.hypothesis.schema import Population, TrainingSpec
from falsify.interventions import ablation_effects, fill_values, get_layer, single_unit_masks
from falsify.interventions.engine import ablation_sweep
from falsify.models.cnn import CNNSpec
from falsify.models.mlp import MLPSpec
from falsify.models.resnet import ResNet20Spec
from falsify.models.training import train_replicate


def parse() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--model", choices=["mlp", "cnn", "resnet20"], default="mlp")
    p.add_argument("--hidden", type=int, nargs="+", default=[1024, 1024, 1024])
    p.add_argument("--channels", type=int, nargs="+", default=[64, 64], help="of the cnn")
    p.add_argument("--tolerance", type=float, default=1e-6, help="largest |Δ| allowed")
    p.add_argument("--epochs", type=int, default=3, help="brief training on digits")
    p.add_argument("--layer", default="hidden2")
    p.add_argument("--units", type=int, default=None, help="sweep the first N units (all)")
    p.add_argument("--metric", choices=["accuracy_drop", "loss_increase"], default="accuracy_drop")
    p.add_argument("--value", choices=["zero", "mean"], default="zero")
    p.add_argument("--budget-mib", type=float, default=256.0, help="the engine's chunk budget")
    p.add_argument("--repeats", type=int, default=3, help="runs of the engine")
    p.add_argument("--baseline-repeats", type=int, default=1, help="runs of each baseline")
    p.add_argument("--ppe", type=int, nargs="+", default=[1, 4, 16, 64])
    p.add_argument("--calibrate-units", type=int, default=16)
    p.add_argument("--strategies", nargs="*", default=[], choices=["split", "hooks"])
    p.add_argument("--skip-baselines", action="store_true")
    p.add_argument("--skip-hook-loop", action="store_true", help="captum only")
    p.add_argument("--threads", type=int, default=None)
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    return p.parse_args()


def captum_effects(
    model: torch.nn.Module,
    layer: str,
    x: torch.Tensor,
    y: torch.Tensor,
    n_units: int,
    units: int,
    value: str,
    metric: str,
    ppe: int | None,
) -> torch.Tensor:
    """captum's effects of the first ``units`` units; ``ppe=None``: the scalar forward."""

    def per_example(inp: torch.Tensor) -> torch.Tensor:
        out = model(inp)
        yy = y.repeat(len(inp) // len(y))  # captum stacks perturbations along the batch
        if metric == "accuracy_drop":
            return (out.argmax(1) == yy).double()
        return -F.cross_entropy(out.double(), yy, reduction="none")

    def scalar(inp: torch.Tensor) -> torch.Tensor:
        return per_example(inp).mean()

    # Units past the first ``units`` form one extra group, ablated once and then dropped.
    groups = torch.clamp(torch.arange(n_units, device=x.device), max=units).unsqueeze(0)
    out_dim = fill_values(model, layer, x[:1], "zero").dim() + 1
    groups = groups.view(1, n_units, *([1] * (out_dim - 2)))  # a conv channel: one group
    baselines = None if value == "zero" else fill_values(model, layer, x, "mean").unsqueeze(0)
    algo = LayerFeatureAblation(scalar if ppe is None else per_example, get_layer(model, layer))
    attr = algo.attribute(
        x, layer_mask=groups, layer_baselines=baselines, perturbations_per_eval=ppe or 1
    )
    # One attribution per unit (equal over a channel's positions): read it at the first one.
    attr = attr.reshape(1 if ppe is None else attr.shape[0], n_units, -1)[:, :, 0]
    return attr.mean(dim=0)[:units].double().cpu()


def main() -> None:
    args = parse()
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    arch = {
        "mlp": lambda: MLPSpec(kind="mlp", hidden=tuple(args.hidden)),
        "cnn": lambda: CNNSpec(kind="cnn", channels=tuple(args.channels)),
        "resnet20": lambda: ResNet20Spec(kind="resnet20"),
    }[args.model]()
    pop = Population(
        data=DigitsData(kind="digits"),
        model=arch,
        training=TrainingSpec(epochs=args.epochs),
        seeds=2,
    )
    model = train_replicate(pop, load_dataset(pop.data), 0, device).model.eval()
    x, y = all_digits(device)
    n_units = fill_values(model, args.layer, x, "zero").shape[0]
    units = min(args.units or n_units, n_units)
    masks = single_unit_masks(n_units, device=device)[:units]
    budget = int(args.budget_mib * 2**20)
    print(f"# ablation sweep: {describe_machine(device)}")
    if args.model == "mlp":
        widths = "→".join(str(w) for w in (64, *args.hidden, 10))
        print(f"MLP {widths}, layer {args.layer}, {units} units × {len(x)} inputs, ")
    else:
        shape = "cnn " + "→".join(map(str, args.channels)) if args.model == "cnn" else "resnet20"
        print(f"{shape}, layer {args.layer}, {units} channels × {len(x)} inputs, ")
    print(f"metric {args.metric}, fill {args.value}, chunk budget {args.budget_mib:g} MiB")

    def engine(strategy: str = "auto") -> torch.Tensor:
        return ablation_effects(
            model,
            args.layer,
            x,
            y,
            masks,
            value=args.value,
            metric=args.metric,
            max_bytes=budget,
            strategy=strategy,  # type: ignore[arg-type]
        ).double()

    engine()  # warm-up: first-call costs (allocator, kernels) are not the sweep's
    mem = PeakMemory(device)
    with mem.measure():
        engine()
    times, ours = timed(engine, args.repeats)
    fill = fill_values(model, args.layer, x, args.value)
    info = ablation_sweep(model, args.layer, x, y, masks, fill, max_bytes=budget)
    rows: list[tuple[str, Timing, torch.Tensor | None]] = [
        (f"falsify engine ({info.strategy})", times, ours)
    ]
    print(
        f"engine: strategy {info.strategy}, {info.rows_evaluated:,} of {units * len(x):,} "
        f"(unit, input) pairs evaluated, {info.chunk_rows:,} rows per chunk"
    )
    print(
        f"peak memory of the sweep: {mem.bytes / 2**20:.1f} MiB "
        f"(budget {args.budget_mib:g} MiB, {mem.bytes / budget:.2f}× the budget)"
    )
    for strategy in args.strategies:
        t, out = timed(lambda s=strategy: engine(s), 1)
        rows.append((f"falsify engine ({strategy})", t, out))
    if not (args.skip_baselines or args.skip_hook_loop):
        t, out = timed(
            lambda: ablation_effects(
                model, args.layer, x, y, masks, value=args.value, metric=args.metric, batched=False
            ).double(),
            args.baseline_repeats,
        )
        rows.append(("plain hook loop", t, out))
    if not args.skip_baselines:
        run = captum_effects
        cal = min(units, args.calibrate_units)
        speed = {}
        for k in args.ppe:
            ct, _ = timed(
                lambda k=k: run(model, args.layer, x, y, n_units, cal, args.value, args.metric, k),
                1,
            )
            speed[k] = ct.median
        best = min(speed, key=speed.__getitem__)
        print(
            f"captum calibration on {cal} units: "
            + ", ".join(f"ppe={k}: {s:.2f} s" for k, s in speed.items())
            + f" → best ppe={best}"
        )
        t, out = timed(
            lambda: run(model, args.layer, x, y, n_units, units, args.value, args.metric, None),
            args.baseline_repeats,
        )
        rows.append(("captum LayerFeatureAblation, ppe=1", t, out))
        t, out = timed(
            lambda: run(model, args.layer, x, y, n_units, units, args.value, args.metric, best),
            args.baseline_repeats,
        )
        rows.append((f"captum LayerFeatureAblation, best ppe={best}", t, out))
    print()
    print(f"{'method':42s} {'wall time (median, spread), CPU time':52s} {'×':>6s} {'max |Δ|':>9s}")
    worst = 0.0
    for name, t, out in rows:
        diff = (out - ours).abs().max().item() if out is not None else float("nan")
        worst = max(worst, diff)
        print(f"{name:42s} {t.spread():52s} {t.median / times.median:6.1f} {diff:9.2e}")
    print("× = median wall time over the engine's; max |Δ| = largest difference from the engine")
    assert worst <= args.tolerance, f"effects differ by {worst:.2e} > {args.tolerance:g}"


if __name__ == "__main__":
    main()
