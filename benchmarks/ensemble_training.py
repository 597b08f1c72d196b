"""Benchmark 2: train 8 seeds of the bundled MLP recipe as one ensemble vs one after another.

The recipe is the population of hypotheses/selectivity_predicts_importance.yaml (digits, MLP
64→64→64→10, Adam, 30 epochs, batches of 64). Compares sequential training
(:func:`falsify.models.training.train_replicate` per seed), the exact ensemble
(:func:`falsify.models.ensemble.train_ensemble`, bit-identical to sequential) and the fast
ensemble (``exact=False``: always batched products), and prints times, ratios and how far each
ensemble's weights are from the sequential ones.

    PYTHONPATH=. python benchmarks/ensemble_training.py
"""

from __future__ import annotations

import argparse

import torch

from benchmarks.common import Timing, describe_machine, timed
from falsify.data import load_dataset
from falsify.hypothesis.loader import load
from falsify.models.ensemble import train_ensemble
from falsify.models.training import TrainResult, train_replicate


def parse() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--file", default="hypotheses/selectivity_predicts_importance.yaml")
    p.add_argument("--seeds", type=int, default=8)
    p.add_argument("--epochs", type=int, default=None, help="override the recipe's epochs")
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--threads", type=int, default=None)
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    return p.parse_args()


def largest_difference(a: list[TrainResult], b: list[TrainResult]) -> tuple[float, int]:
    """Largest absolute weight difference, and how many models are bit-identical."""
    worst, same = 0.0, 0
    for ra, rb in zip(a, b, strict=True):
        sa, sb = ra.model.state_dict(), rb.model.state_dict()
        diffs = [(sa[k] - sb[k]).abs().max().item() for k in sa]
        worst = max(worst, *diffs)
        same += all(torch.equal(sa[k], sb[k]) for k in sa)
    return worst, same


def main() -> None:
    args = parse()
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    overrides = [f"population.training.epochs={args.epochs}"] if args.epochs else []
    pop = load(args.file, overrides).hypothesis.population
    pop = pop.model_copy(update={"seeds": tuple(range(args.seeds))})
    data = load_dataset(pop.data)
    seeds = list(pop.seeds)
    spec = pop.training
    print(f"# ensemble training: {describe_machine(device)}")
    print(
        f"{len(seeds)} seeds of MLP {pop.model.hidden}, {spec.optimizer} lr {spec.lr}, "
        f"{spec.epochs} epochs, batches of {spec.batch_size}, {len(data.y_train)} examples"
    )
    # Warm-up: the first optimizer step of a process imports and initializes lazily.
    warm = pop.model_copy(update={"training": spec.model_copy(update={"epochs": 1})})
    train_replicate(warm, data, 0, device)
    train_ensemble(warm, data, seeds[:2], device)

    def sequential() -> list[TrainResult]:
        return [train_replicate(pop, data, s, device) for s in seeds]

    rows: list[tuple[str, Timing, list[TrainResult]]] = []
    t_seq, seq = timed(sequential, args.repeats)
    rows.append(("sequential (train_replicate per seed)", t_seq, seq))
    t, out = timed(lambda: train_ensemble(pop, data, seeds, device), args.repeats)
    rows.append(("ensemble, exact", t, out))
    t, out = timed(lambda: train_ensemble(pop, data, seeds, device, exact=False), args.repeats)
    rows.append(("ensemble, fast (exact=False)", t, out))
    print()
    print(
        f"{'method':38s} {'wall time (median, spread), CPU time':52s} {'speed-up':>8s} "
        f"{'max |Δw|':>9s} {'bit-identical':>13s}"
    )
    for name, timing, results in rows:
        worst, same = largest_difference(results, seq)
        print(
            f"{name:38s} {timing.spread():52s} {t_seq.median / timing.median:8.2f} "
            f"{worst:9.2e} {same:>7d} of {len(seeds)}"
        )
    accs = [(r.test_accuracy, s.test_accuracy) for r, s in zip(rows[2][2], seq, strict=True)]
    changed = sum(a != b for a, b in accs)
    print(f"speed-up = sequential median wall time over the method's; fast mode: {changed} of ")
    print(f"{len(seeds)} models' test accuracy differs from the sequential model's")


if __name__ == "__main__":
    main()
