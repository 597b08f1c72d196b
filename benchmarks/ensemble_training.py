"""Benchmark 2: train 8 seeds of a recipe as one ensemble vs one after another vs torch.func.vmap.

Recipes on the population of hypotheses/selectivity_predicts_importance.yaml (digits, Adam
lr 1e-3, batches of 64): its MLP 64→64→64→10 with batch norm and dropout 0.2 (30 epochs), the
same MLP under the selectivity regularizer (α = −1), the default cnn (channels 16, 32; 5 epochs
unless ``--epochs``) without and with the regularizer, and resnet20 (width 16, 1 epoch). With
``--arch transformer``, instead the populations of two bundled transformer files, as they are
(AdamW with warm-up, ``steps``; ``--steps`` shortens them): modular addition (one layer with an
MLP, full batch of 577) and induction (two attention-only layers, batches of 100 sequences of 17
tokens).

For each, in one run, it times sequential training
(:func:`falsify.models.training.train_replicate` per seed); the exact ensemble
(:func:`falsify.models.ensemble.train_ensemble`, bit-identical to sequential) with its
operations probed in the warm-up, as a process probes them once, and again with the probes in
every call; the fast ensemble (``exact=False``: always the batched kernels); and a plain
``torch.func.vmap`` ensemble (``stack_module_state`` + ``functional_call``,
``randomness="different"``: its dropout masks are not the sequential ones). It prints times,
ratios against sequential and against vmap, and how far each method's weights are from the
sequential ones. See docs/performance.md.

    OMP_NUM_THREADS=1 PYTHONPATH=. python benchmarks/ensemble_training.py
    OMP_NUM_THREADS=1 PYTHONPATH=. python benchmarks/ensemble_training.py --arch transformer
"""

from __future__ import annotations

import argparse
import copy

import torch
from torch import nn
from torch.func import functional_call, stack_module_state, vmap

from benchmarks.common import Timing, describe_machine, timed
from falsify.data import Dataset, load_dataset
from falsify.hypothesis.loader import load
from falsify.hypothesis.schema import Population, TrainingSpec
from falsify.models import build_model
from falsify.models.cnn import CNNSpec
from falsify.models.ensemble import train_ensemble
from falsify.models.mlp import MLPSpec
from falsify.models.resnet import ResNet20Spec
from falsify.models.stacked import OP_PLANS
from falsify.models.training import (
    TrainResult,
    _cross_entropy,
    _optimizer,
    _warmup,
    evaluate,
    one_thread,
    train_replicate,
)

# name -> (architecture from the file's MLP, default epochs)
MODELS = {
    "mlp-bn-dropout": (
        lambda mlp: MLPSpec(kind="mlp", hidden=mlp.hidden, batch_norm=True, dropout=0.2),
        None,
    ),
    "cnn": (lambda _: CNNSpec(kind="cnn"), 5),
    "resnet20": (lambda _: ResNet20Spec(kind="resnet20"), 1),
    # The file's MLP as the bundled selectivity files train it at α = −1 (30 epochs).
    "mlp-selectivity": (lambda mlp: MLPSpec(kind="mlp", hidden=mlp.hidden), None),
    "cnn-selectivity": (lambda _: CNNSpec(kind="cnn"), 5),
}
# name -> regularizer blocks added to the recipe's training (the vmap baseline has no terms).
REGULARIZED = {
    "mlp-selectivity": {"selectivity": {"alpha": -1.0}},
    "cnn-selectivity": {"selectivity": {"alpha": -1.0}},
}
# --arch transformer: name -> the file whose population (model and recipe) is trained.
TRANSFORMERS = {
    "transformer-addition": "hypotheses/modular_addition_uses_few_frequencies.yaml",
    "transformer-induction": "hypotheses/induction_heads_are_necessary.yaml",
}


def parse() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--file", default="hypotheses/selectivity_predicts_importance.yaml")
    p.add_argument("--arch", choices=["dense-and-conv", "transformer"], default="dense-and-conv")
    names = [*MODELS, *TRANSFORMERS]
    p.add_argument("--models", nargs="+", default=None, choices=names, help="default: --arch's")
    p.add_argument("--seeds", type=int, default=8)
    p.add_argument("--epochs", type=int, default=None, help="override every recipe's epochs")
    p.add_argument("--steps", type=int, default=None, help="override a transformer's steps")
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--threads", type=int, default=None)
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    return p.parse_args()


def largest_difference(a: list[TrainResult], b: list[TrainResult]) -> tuple[float, int]:
    """Largest absolute difference in weights and buffers, and how many models are identical."""
    worst, same = 0.0, 0
    for ra, rb in zip(a, b, strict=True):
        sa, sb = ra.model.state_dict(), rb.model.state_dict()
        diffs = [(sa[k].double() - sb[k].double()).abs().max().item() for k in sa]
        worst = max(worst, *diffs)
        same += all(torch.equal(sa[k], sb[k]) for k in sa)
    return worst, same


def train_vmap(
    pop: Population, data: Dataset, seeds: list[int], device: torch.device
) -> list[TrainResult]:
    """The plain torch.func ensemble: each replicate's initial weights and batch order as in
    sequential training, one vmapped forward and loss, the recipe's optimizer and warm-up on the
    stacked weights."""
    with one_thread():
        models: list[nn.Module] = []
        for seed in seeds:
            with torch.random.fork_rng(devices=[]):
                torch.manual_seed(seed)
                models.append(build_model(pop.model, data.input_shape, data.n_classes).to(device))
        params, buffers = stack_module_state(models)  # type: ignore[arg-type]
        base = copy.deepcopy(models[0]).to("meta").train()

        def loss(p: dict, b: dict, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
            return _cross_entropy(functional_call(base, (p, b), (x,)), y)

        losses = vmap(loss, randomness="different")
        spec = pop.training
        opt = _optimizer(list(params.values()), spec)
        schedule = _warmup(opt, spec.warmup_steps)
        x, y = data.x_train.to(device), data.y_train.to(device)
        n = len(y)
        per_epoch = -(-n // spec.batch_size)
        epochs = -(-spec.steps // per_epoch) if spec.steps is not None else spec.epochs
        left = spec.steps
        shuffles = [torch.Generator().manual_seed(seed) for seed in seeds]
        for _ in range(epochs):
            orders = torch.stack([torch.randperm(n, generator=g) for g in shuffles]).to(device)
            for start in range(0, n, spec.batch_size):
                if left == 0:
                    break
                idx = orders[:, start : start + spec.batch_size]
                if idx.shape[1] < 2:
                    continue  # batch norm cannot normalize a batch of one
                opt.zero_grad(set_to_none=True)
                losses(params, buffers, x[idx], y[idx]).sum().backward()
                opt.step()
                if schedule is not None:
                    schedule.step()
                left = None if left is None else left - 1
        out = []
        state = models[0].state_dict()
        for i, model in enumerate(models):
            model.load_state_dict({k: v[i] for k, v in (params | buffers).items() if k in state})
            acc = evaluate(model, data.x_test.to(device), data.y_test.to(device))
            out.append(TrainResult(model=model, train_loss=float("nan"), test_accuracy=acc))
        return out


def recipe(name: str, base: Population, args: argparse.Namespace) -> Population:
    """The population ``name`` trains: a digits recipe on ``base``, or a transformer file's."""
    seeds = tuple(range(args.seeds))
    if name in TRANSFORMERS:
        pop = load(TRANSFORMERS[name], []).hypothesis.population
        spec = pop.training
        if args.steps:
            spec = spec.model_copy(update={"steps": args.steps})
        return pop.model_copy(update={"seeds": seeds, "training": spec})
    make, default_epochs = MODELS[name]
    spec = base.training
    spec = spec.model_copy(update={"epochs": args.epochs or default_epochs or spec.epochs})
    if name in REGULARIZED:
        spec = TrainingSpec.model_validate(spec.model_dump() | REGULARIZED[name])
    return base.model_copy(update={"model": make(base.model), "seeds": seeds, "training": spec})


def bench(name: str, pop: Population, args: argparse.Namespace) -> None:
    data = load_dataset(pop.data)
    device = torch.device(args.device)
    seeds = list(pop.seeds)
    spec = pop.training
    length = f"{spec.steps} steps" if spec.steps is not None else f"{spec.epochs} epochs"
    print()
    print(
        f"## {name}: {len(seeds)} seeds of {pop.model.model_dump(exclude_defaults=True)}, "
        f"{spec.optimizer} lr {spec.lr}, {length}, batches of {spec.batch_size}, "
        f"{len(data.y_train)} examples"
    )
    # Warm-up: the first optimizer step of a process imports and initializes lazily.
    short = {"epochs": 1} if spec.steps is None else {"steps": 2}
    warm = pop.model_copy(update={"training": spec.model_copy(update=short)})
    train_replicate(warm, data, 0, device)
    train_ensemble(warm, data, seeds, device)  # and probes the operations (kept for the process)
    with_vmap = name not in REGULARIZED
    if with_vmap:
        train_vmap(warm, data, seeds[:2], device)

    def sequential() -> list[TrainResult]:
        return [train_replicate(pop, data, s, device) for s in seeds]

    rows: list[tuple[str, Timing, list[TrainResult]]] = []
    t_seq, seq = timed(sequential, args.repeats)
    rows.append(("sequential (train_replicate per seed)", t_seq, seq))
    t, out = timed(lambda: train_ensemble(pop, data, seeds, device), args.repeats)
    rows.append(("ensemble, exact", t, out))

    def fresh() -> list[TrainResult]:
        OP_PLANS.clear()  # as in a new process: every operation probed again
        return train_ensemble(pop, data, seeds, device)

    t, out = timed(fresh, args.repeats)
    rows.append(("ensemble, exact, probes included", t, out))
    t, out = timed(lambda: train_ensemble(pop, data, seeds, device, exact=False), args.repeats)
    rows.append(("ensemble, fast (exact=False)", t, out))
    t_vmap = None
    if with_vmap:
        t_vmap, out = timed(lambda: train_vmap(pop, data, seeds, device), args.repeats)
        rows.append(("torch.func.vmap ensemble", t_vmap, out))
    print(
        f"{'method':38s} {'wall time (median, spread), CPU time':52s} {'×seq':>6s} "
        f"{'×vmap':>6s} {'cpu ×seq':>8s} {'cpu ×vmap':>9s} {'max |Δw|':>9s} {'identical':>9s} "
        f"{'mean acc':>8s}"
    )
    for label, timing, results in rows:
        worst, same = largest_difference(results, seq)
        acc = sum(r.test_accuracy for r in results) / len(results)
        vs_vmap, cpu_vs_vmap = (
            (
                f"{t_vmap.median / timing.median:6.2f}",
                f"{t_vmap.median_cpu / timing.median_cpu:9.2f}",
            )
            if t_vmap is not None
            else (f"{'–':>6s}", f"{'–':>9s}")
        )
        print(
            f"{label:38s} {timing.spread():52s} {t_seq.median / timing.median:6.2f} "
            f"{vs_vmap} {t_seq.median_cpu / timing.median_cpu:8.2f} "
            f"{cpu_vs_vmap} {worst:9.2e} {same:>4d} of {len(seeds)} {acc:8.4f}"
        )


def main() -> None:
    args = parse()
    if args.threads:
        torch.set_num_threads(args.threads)
    base = load(args.file, []).hypothesis.population
    names = args.models or list(TRANSFORMERS if args.arch == "transformer" else MODELS)
    print(f"# ensemble training: {describe_machine(torch.device(args.device))}")
    print(
        "×seq, ×vmap: the baseline's median wall time over the method's (higher is faster); "
        "cpu ×: the same for CPU time (steadier on a shared machine)"
    )
    for name in names:
        bench(name, recipe(name, base, args), args)


if __name__ == "__main__":
    main()
