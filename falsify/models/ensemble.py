"""Training every seed of a population at once, as one batched ("grouped weights") model.

Each replicate of a population is an MLP with the same architecture. Stacking the weights of S
replicates as ``[S, out, in]`` tensors turns S small matrix products into one batched product
(``torch.baddbmm``), so one optimizer step of the ensemble does the work of S sequential steps
with one round of Python and kernel-launch overhead. The replicates stay independent:

* each is built exactly as :func:`falsify.models.training.train_replicate` builds it (the global
  RNG forked and seeded with its seed), so its initial weights are the sequential ones;
* each draws its own mini-batch order from its own ``torch.Generator`` seeded with its seed;
* the loss is the sum of the replicates' mean cross-entropies, so the gradient of replicate s's
  weights is the gradient of its own loss alone, and Adam / SGD (elementwise updates, the
  same step count for every replicate) keep one state per weight, i.e. per replicate.

The arithmetic is the sequential arithmetic with the matrix products batched; see
docs/performance.md for the agreement measured against sequential training. Recipes whose
training is not per-example independent or draws random numbers during training (batch norm,
dropout) are not supported: :func:`supports_ensemble` says no and the caller trains them one
seed at a time.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
from torch import nn
from torch.nn import functional as F

from falsify.data import Dataset
from falsify.hypothesis.schema import Population, TrainingSpec
from falsify.models import build_model
from falsify.models.mlp import MLP
from falsify.models.training import TrainResult, evaluate, one_thread, record_metrics

__all__ = ["NotBatchable", "supports_ensemble", "train_ensemble"]


def supports_ensemble(population: Population) -> bool:
    """True when :func:`train_ensemble` reproduces this population's sequential recipe."""
    spec, training = population.model, population.training
    plain_loss = (
        training.label_noise == 0
        and training.control == "none"
        and all(r.ensemble or not r.active for r in training.regularizers())
    )
    # The stacked trainer runs epochs at a constant rate with Adam or SGD only, and keeps no
    # checkpoints. A regularizer's window needs no check here: only a term that leaves training
    # as it is may be on at all (``ensemble``), in a window or not.
    plain_schedule = training.steps is None and training.warmup_steps == 0
    plain_schedule = plain_schedule and not training.checkpoint_epochs
    plain_schedule = plain_schedule and training.optimizer != "adamw"
    return spec.ensemble_ready() and plain_loss and plain_schedule


def _optimizer(params: list[torch.Tensor], spec: TrainingSpec) -> torch.optim.Optimizer:
    # The same constructor calls as falsify.models.training._optimizer, on the stacked weights.
    if spec.optimizer == "sgd":
        return torch.optim.SGD(
            params, lr=spec.lr, momentum=spec.momentum, weight_decay=spec.weight_decay
        )
    return torch.optim.Adam(params, lr=spec.lr, weight_decay=spec.weight_decay)


def _linears(model: MLP) -> list[nn.Linear]:
    return [getattr(model, f"hidden{i}").linear for i in range(1, model.n_hidden + 1)] + [
        model.head
    ]


# Each operation of a linear layer, batched over the replicates and one replicate at a time.
# (h [S, B, in], w [S, out, in], b [S, out], g [S, B, out])
_FORWARD = (
    lambda h, w, b: torch.baddbmm(b.unsqueeze(1), h, w.transpose(1, 2)),
    lambda h, w, b: torch.stack([torch.addmm(b[s], h[s], w[s].t()) for s in range(len(w))]),
)
_GRAD_INPUT = (
    lambda g, w: torch.bmm(g, w),
    lambda g, w: torch.stack([g[s].mm(w[s]) for s in range(len(w))]),
)
_GRAD_WEIGHT = (
    lambda g, h: torch.bmm(g.transpose(1, 2), h),
    lambda g, h: torch.stack([g[s].t().mm(h[s]) for s in range(len(h))]),
)
_GRAD_BIAS = (
    lambda g: g.sum(dim=1),
    lambda g: torch.stack([g[s].sum(dim=0) for s in range(len(g))]),
)

# Each replicate's mean cross-entropy (logits [S, B, C], labels [S, B] -> [S]).
_LOSS = (
    lambda lg, y: (
        F.cross_entropy(lg.reshape(-1, lg.shape[-1]), y.reshape(-1), reduction="none")
        .view(y.shape)
        .mean(dim=1)
    ),
    lambda lg, y: torch.stack([F.cross_entropy(a, b) for a, b in zip(lg, y, strict=True)]),
)


def _plan_loss(s: int, b: int, c: int, device: torch.device) -> int:
    """The first variant of ``_LOSS`` whose gradient equals ``nn.CrossEntropyLoss``'s exactly.

    The batched variant's loss value may differ from the per-replicate mean in the last bit
    (its sum runs in another order); only the gradient moves the weights.
    """
    gen = torch.Generator().manual_seed(1)
    logits = (3 * torch.randn(s, b, c, generator=gen)).to(device)
    y = torch.randint(0, c, (s, b), generator=gen).to(device)
    ref = []
    for i in range(s):
        li = logits[i].clone().requires_grad_()
        F.cross_entropy(li, y[i]).backward()
        ref.append(li.grad)
    for k, fn in enumerate(_LOSS):
        lg = logits.clone().requires_grad_()
        fn(lg, y).sum().backward()
        if lg.grad is not None and all(torch.equal(lg.grad[i], r) for i, r in enumerate(ref)):
            return k
    raise _NotExact


@dataclass(frozen=True)
class _Plan:
    """Which variant of each operation reproduces ``nn.Linear``'s autograd bit for bit."""

    forward: int
    grad_input: int
    grad_weight: int
    grad_bias: int


def _plan_linear(s: int, b: int, d_in: int, d_out: int, device: torch.device) -> _Plan:
    """Probe, on random data, which variants equal ``F.linear`` and its backward exactly.

    Whether a batched matrix product sums in the same order as the single one depends on the
    kernel the backend picks for these shapes, not on the values; a probe over thousands of
    random products tells the two apart. The batched variant is preferred (it is faster), the
    per-replicate loop is the fallback, and if neither matches the recipe is not batched.
    """
    gen = torch.Generator().manual_seed(0)
    h = torch.randn(s, b, d_in, generator=gen).to(device)
    w = torch.randn(s, d_out, d_in, generator=gen).to(device)
    bias = torch.randn(s, d_out, generator=gen).to(device)
    g = torch.randn(s, b, d_out, generator=gen).to(device)
    ref_out, ref_gin, ref_gw, ref_gb = [], [], [], []
    for i in range(s):
        hi = h[i].clone().requires_grad_()
        wi = w[i].clone().requires_grad_()
        bi = bias[i].clone().requires_grad_()
        out = F.linear(hi, wi, bi)
        out.backward(g[i])
        ref_out.append(out.detach())
        ref_gin.append(hi.grad)
        ref_gw.append(wi.grad)
        ref_gb.append(bi.grad)

    def pick(variants: tuple, args: tuple, ref: list[torch.Tensor | None]) -> int:
        for k, fn in enumerate(variants):
            got = fn(*args)
            if all(torch.equal(got[i], r) for i, r in enumerate(ref) if r is not None):
                return k
        raise _NotExact

    return _Plan(
        forward=pick(_FORWARD, (h, w, bias), ref_out),
        grad_input=pick(_GRAD_INPUT, (g, w), ref_gin),
        grad_weight=pick(_GRAD_WEIGHT, (g, h), ref_gw),
        grad_bias=pick(_GRAD_BIAS, (g,), ref_gb),
    )


class _NotExact(Exception):
    """No variant of an operation reproduces the sequential arithmetic."""


class _StackedLinear(torch.autograd.Function):
    """S independent ``nn.Linear`` layers applied to S batches, with the plan's arithmetic."""

    @staticmethod
    def forward(  # type: ignore[override]
        ctx: Any, h: torch.Tensor, w: torch.Tensor, b: torch.Tensor, plan: _Plan
    ) -> torch.Tensor:
        ctx.save_for_backward(h, w)
        ctx.plan = plan
        return _FORWARD[plan.forward](h, w, b)

    @staticmethod
    def backward(ctx: Any, g: torch.Tensor) -> tuple[torch.Tensor | None, ...]:  # type: ignore[override]
        h, w = ctx.saved_tensors
        plan: _Plan = ctx.plan
        gin = _GRAD_INPUT[plan.grad_input](g, w) if ctx.needs_input_grad[0] else None
        return gin, _GRAD_WEIGHT[plan.grad_weight](g, h), _GRAD_BIAS[plan.grad_bias](g), None


class NotBatchable(Exception):
    """The recipe cannot be trained as an ensemble with the sequential arithmetic."""


def _plans(
    s: int, sizes: list[int], widths: list[int], device: torch.device, exact: bool
) -> tuple[dict[tuple[int, int], _Plan], dict[int, int]]:
    """A plan per (mini-batch size, layer) and a loss variant per mini-batch size."""
    if not exact:
        return {(b, i): _Plan(0, 0, 0, 0) for b in sizes for i in range(len(widths) - 1)}, {
            b: 0 for b in sizes
        }
    try:
        linear = {
            (b, i): _plan_linear(s, b, widths[i], widths[i + 1], device)
            for b in sizes
            for i in range(len(widths) - 1)
        }
        return linear, {b: _plan_loss(s, b, widths[-1], device) for b in sizes}
    except _NotExact as err:
        raise NotBatchable("no batched arithmetic equals the sequential one here") from err


def train_ensemble(
    population: Population,
    data: Dataset,
    seeds: list[int],
    device: torch.device,
    exact: bool = True,
) -> list[TrainResult]:
    """Train the replicates of ``seeds`` together; result ``i`` is seed ``seeds[i]``'s model.

    With ``exact`` (the default) every matrix product is checked to sum in the same order as
    ``nn.Linear`` does for one replicate, so each model's weights equal sequential training's
    bit for bit; ``exact=False`` always uses the batched products (faster where the backend's
    batched kernels differ, equal to sequential training only to float rounding, which training
    then amplifies). Raises :class:`NotBatchable` when the recipe cannot be batched exactly.
    """
    with one_thread():  # as train_replicate: the thread count is part of the arithmetic
        return _train_ensemble(population, data, seeds, device, exact)


def _train_ensemble(
    population: Population, data: Dataset, seeds: list[int], device: torch.device, exact: bool
) -> list[TrainResult]:
    if not supports_ensemble(population):
        raise NotBatchable(
            "batch norm, dropout, regularizers and randomized labels need sequential training"
        )
    models: list[MLP] = []
    for seed in seeds:
        with torch.random.fork_rng(devices=[device] if device.type == "cuda" else []):
            torch.manual_seed(seed)
            model = build_model(population.model, data.input_shape, data.n_classes).to(device)
        if not isinstance(model, MLP):
            raise NotBatchable("ensemble training supports the built-in MLP only")
        models.append(model)
    layers = [_linears(m) for m in models]
    n_layers = len(layers[0])
    weights = [
        torch.stack([ls[i].weight.detach() for ls in layers]).requires_grad_()
        for i in range(n_layers)
    ]
    biases = [
        torch.stack([ls[i].bias.detach() for ls in layers]).requires_grad_()
        for i in range(n_layers)
    ]
    spec = population.training
    x = data.x_train.to(device).flatten(1)
    y = data.y_train.to(device)
    n, s = len(y), len(seeds)
    widths = [weights[0].shape[2]] + [w.shape[1] for w in weights]
    sizes = sorted({min(spec.batch_size, n), n % spec.batch_size} - {0})
    plans, loss_plans = _plans(s, sizes, widths, device, exact)
    # Parameters in model.parameters() order (weight, bias per layer), as sequential training.
    opt = _optimizer([p for wb in zip(weights, biases, strict=True) for p in wb], spec)
    shuffles = [torch.Generator().manual_seed(seed) for seed in seeds]
    last = torch.zeros(s, dtype=torch.float64)
    for _ in range(spec.epochs):
        orders = torch.stack([torch.randperm(n, generator=g) for g in shuffles]).to(device)
        total = torch.zeros(s, dtype=torch.float64, device=device)
        for start in range(0, n, spec.batch_size):
            idx = orders[:, start : start + spec.batch_size]  # [S, B]: each its own batch
            opt.zero_grad(set_to_none=True)
            h = x[idx]
            for i, (w, b) in enumerate(zip(weights, biases, strict=True)):
                h = _StackedLinear.apply(h, w, b, plans[(idx.shape[1], i)])
                if i < n_layers - 1:
                    h = torch.relu(h)
            # Each replicate's own mean cross-entropy, with nn.CrossEntropyLoss's gradient.
            losses = _LOSS[loss_plans[idx.shape[1]]](h, y[idx])
            losses.sum().backward()
            opt.step()
            total += losses.detach().to(torch.float64) * idx.shape[1]
        last = (total / n).cpu()
    results = []
    for i, model in enumerate(models):
        with torch.no_grad():
            for layer, w, b in zip(_linears(model), weights, biases, strict=True):
                layer.weight.copy_(w[i])
                layer.bias.copy_(b[i])
        model.eval()
        acc = evaluate(model, data.x_test.to(device), data.y_test.to(device))
        metrics = record_metrics(model, population, data, device)
        results.append(
            TrainResult(model=model, train_loss=float(last[i]), test_accuracy=acc, metrics=metrics)
        )
    return results
