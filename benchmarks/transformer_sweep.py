"""Benchmark: head and neuron ablation and head patching sweeps on a trained transformer.

Compares, in one run and on the same model (a 2-layer transformer with an MLP, trained briefly
on ``induction``):

* falsify's engine (:func:`falsify.interventions.ablation_effects` and
  :func:`falsify.interventions.patching.patching_effects`) with its ``resume`` strategy: the
  model runs once to the ablated layer, and (unit, example) rows batched on a leading dimension
  resume from the edited ``hook_z`` / ``hook_post`` (the rest of that block, later blocks,
  unembedding);
* the engine's ``hooks`` strategy (the same rows, each running the whole hooked model);
* the plain hook loop (``batched=False``: one hooked forward of the whole split per unit);
* TransformerLens's ``patching.get_act_patch_attn_head_out_all_pos`` (one full forward per
  head) on the same model, whose hook points carry TransformerLens's names, when
  ``transformer_lens`` is installed (it is not a falsify dependency; 4.x has no
  ``HookedTransformer``, so the helper runs through a small adapter).

Prints each method's time, its ratio to the engine's ``resume`` path, and the largest absolute
difference of its effects from the engine's.

    PYTHONPATH=. python benchmarks/transformer_sweep.py
"""

from __future__ import annotations

import argparse
from types import SimpleNamespace

import torch

from benchmarks.common import describe_machine, timed
from falsify.data import load_dataset
from falsify.data.base import IGNORE
from falsify.data.induction import InductionTask
from falsify.hooks import capture, hooked
from falsify.hypothesis.schema import Population, TrainingSpec
from falsify.interventions import ablation_effects, single_unit_masks
from falsify.interventions.patching import corrupt, patching_effects
from falsify.models.training import train_replicate
from falsify.models.transformer import Transformer, TransformerSpec


def parse() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--n-test", type=int, default=500)
    p.add_argument("--heads", type=int, default=8)
    p.add_argument("--d-mlp", type=int, default=128)
    p.add_argument("--steps", type=int, default=100)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--threads", type=int, default=None)
    return p.parse_args()


def _loss(logits: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """falsify's loss: mean cross-entropy over each example's scored positions, then examples."""
    ce = torch.nn.functional.cross_entropy(
        logits.transpose(1, 2), y, ignore_index=IGNORE, reduction="none"
    )
    scored = (y != IGNORE).to(ce.dtype)
    return ((ce * scored).sum(1) / scored.sum(1)).mean()


class _LensAdapter:
    """What TransformerLens's patching helpers call on a model (``cfg``, ``run_with_hooks``),
    over falsify's transformer, whose hook points have TransformerLens's names."""

    def __init__(self, model: Transformer) -> None:
        heads = model.blocks[0].attn.W_Q.shape[0]
        self.model = model
        self.cfg = SimpleNamespace(
            n_layers=len(model.blocks), n_heads=heads, n_key_value_heads=None, device="cpu"
        )

    def run_with_hooks(self, tokens: torch.Tensor, fwd_hooks: list) -> torch.Tensor:
        hooks = {name: (lambda _m, _i, out, fn=fn: fn(out, None)) for name, fn in fwd_hooks}
        with hooked(self.model, hooks):
            return self.model(tokens)


def lens_effects(model: Transformer, x: torch.Tensor, y: torch.Tensor, x_bad: torch.Tensor):
    """TransformerLens's head-patching sweep on the same model: ``[layers, heads]``, or None."""
    try:
        from transformer_lens import patching
    except ImportError:
        return None
    names = [f"blocks.{i}.attn.hook_z" for i in range(len(model.blocks))]
    bad_cache = {}
    for name in names:
        with capture(model, name) as seen:
            model(x_bad)
        bad_cache[name] = seen[0]
    base = _loss(model(x), y)
    # Noising: run the clean tokens with each head's z taken from the corrupted run's cache.
    return patching.get_act_patch_attn_head_out_all_pos(
        _LensAdapter(model), x, bad_cache, lambda logits: _loss(logits, y) - base
    )


def patch_loop(model: Transformer, x: torch.Tensor, y: torch.Tensor, x_bad: torch.Tensor):
    """The plain patching loop: one hooked forward of the clean split per head, ``[layers,
    heads]``."""
    base = _loss(model(x), y)
    rows = []
    for i, block in enumerate(model.blocks):
        name = f"blocks.{i}.attn.hook_z"
        with capture(model, name) as seen:
            model(x_bad)
        row = []
        for head in range(block.attn.W_Q.shape[0]):

            def patch(_m, _i, out, h=head, bad=seen[0]):
                out = out.clone()
                out[:, :, h] = bad[:, :, h]
                return out

            with hooked(model, {name: patch}):
                row.append(_loss(model(x), y) - base)
        rows.append(torch.stack(row))
    return torch.stack(rows)


def main() -> None:
    args = parse()
    if args.threads:
        torch.set_num_threads(args.threads)
    task = InductionTask(
        kind="induction", vocab=24, half=8, min_half=4, n_train=2000, n_test=args.n_test
    )
    spec = TransformerSpec(
        kind="transformer", n_layers=2, d_model=64, n_heads=args.heads, d_head=8, d_mlp=args.d_mlp
    )
    training = TrainingSpec(optimizer="adamw", lr=3e-3, steps=args.steps, batch_size=100)
    pop = Population(data=task, model=spec, training=training, seeds=2)
    data = load_dataset(task)
    model = train_replicate(pop, data, 0, torch.device("cpu")).model.eval()
    x, y = data.x_test, data.y_test
    x_bad = corrupt(x, y, "prefix", seed=0)
    print(describe_machine(torch.device("cpu")))
    print(f"{len(x)} examples of {x.shape[1]} tokens; {args.heads} heads, {args.d_mlp} neurons")
    with torch.no_grad():
        sweeps = [
            (
                f"zero-ablate the {args.heads} heads of blocks.1",
                "blocks.1.attn.hook_z",
                args.heads,
                "zero",
            ),
            (
                f"resample-ablate the {args.heads} heads of blocks.1",
                "blocks.1.attn.hook_z",
                args.heads,
                "resample",
            ),
            (
                f"mean-ablate the {args.d_mlp} neurons of blocks.0",
                "blocks.0.mlp.hook_post",
                args.d_mlp,
                "mean",
            ),
        ]
        for what, layer, units, value in sweeps:
            masks = single_unit_masks(units)

            def run(
                batched: bool, strategy: str, layer=layer, masks=masks, value=value
            ) -> torch.Tensor:
                return ablation_effects(
                    model,
                    layer,
                    x,
                    y,
                    masks,
                    value=value,
                    metric="loss_increase",
                    batched=batched,
                    strategy=strategy,
                )

            t_fast, fast = timed(lambda r=run: r(True, "resume"), args.repeats)
            t_hooks, hooks = timed(lambda r=run: r(True, "hooks"), args.repeats)
            t_slow, slow = timed(lambda r=run: r(False, "auto"), args.repeats)
            diff = max((fast - slow).abs().max().item(), (fast - hooks).abs().max().item())
            print(
                f"{what}: engine resume {t_fast.spread()}, engine hooks {t_hooks.spread()} "
                f"({t_hooks.median / t_fast.median:.2f}x), plain hook loop {t_slow.spread()} "
                f"({t_slow.median / t_fast.median:.2f}x), max |diff| {diff:.1e}"
            )
        both = []
        for i in range(2):
            masks = single_unit_masks(args.heads)
            both.append(
                lambda i=i, m=masks: patching_effects(
                    model, f"blocks.{i}.attn.hook_z", x, y, x_bad, m
                )
            )
        t_fast, fast = timed(lambda: torch.stack([f() for f in both]), args.repeats)
        t_loop, loop = timed(lambda: patch_loop(model, x, y, x_bad), args.repeats)
        diff = (loop - fast).abs().max().item()
        print(
            f"patch every head of both layers from the prefix corruption: engine resume "
            f"{t_fast.spread()}, plain hook loop {t_loop.spread()} "
            f"({t_loop.median / t_fast.median:.2f}x), max |diff| {diff:.1e}"
        )
        t_lens, lens = timed(lambda: lens_effects(model, x, y, x_bad), args.repeats)
        if lens is None:
            print("TransformerLens: not installed (pip install transformer-lens)")
        else:
            diff = (lens.float() - fast).abs().max().item()
            print(
                f"TransformerLens get_act_patch_attn_head_out_all_pos: {t_lens.spread()} "
                f"({t_lens.median / t_fast.median:.2f}x), max |diff| {diff:.1e}"
            )


if __name__ == "__main__":
    main()
