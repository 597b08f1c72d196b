"""Training every seed of a population at once, as one stacked model.

The replicates of a population share an architecture; :mod:`falsify.models.stacked` stacks
their weights (``[S, *shape]``) so that one forward, backward and optimizer step does the work
of S sequential steps with one round of Python and kernel-launch overhead. The built-in MLP
(with or without batch norm and dropout), cnn, resnet20 and transformer
(:mod:`falsify.models.stacked_transformer`) are supported. The replicates stay independent:

* each is built exactly as :func:`falsify.models.training.train_replicate` builds it (the global
  RNG forked and seeded with its seed), so its initial weights are the sequential ones;
* each draws its own mini-batch order from its own ``torch.Generator`` seeded with its seed, and
  its own dropout masks from a generator holding the global RNG's state after its model was
  built, which is where sequential training draws them;
* batch norm normalizes each replicate's batch with its own statistics and running averages;
* the loss is the sum of the replicates' mean cross-entropies (a sequence's at its scored
  positions) plus each replicate's regularizer terms, computed replicate by replicate on its
  own layer outputs and labels as sequential training computes them, so the gradient of
  replicate s's weights is the gradient of its own loss alone, and Adam / AdamW / SGD
  (elementwise updates, the same step count and learning-rate schedule for every replicate)
  keep one state per weight, i.e. per replicate.

A term's gradient reaches a layer's stacked output in one piece and is added there to the
gradient from the layers above: a sum of two numbers, which is the same in either order, as in
sequential training, where the layer's output also has those two consumers.

Each batched operation is checked to sum in the order of the sequential one (see
:mod:`falsify.models.stacked`), so every model equals its sequentially trained self bit for bit;
docs/performance.md gives the measurements. Recipes it cannot reproduce (a regularizer whose
term reads the weights, such as enmeshment, or layers the stacked network does not keep;
controls, other architectures, dropout off the CPU) make
:func:`supports_ensemble` false or raise :class:`NotBatchable`, and the caller trains them one
seed at a time.
"""

from __future__ import annotations

from functools import partial

import torch
from torch import nn

from falsify.data import Dataset
from falsify.data.labels import training_labels
from falsify.data.stream import Inputs, StreamedDataset, inputs_of
from falsify.hypothesis.schema import Population
from falsify.models import build_model
from falsify.models.mlp import MLPSpec
from falsify.models.regularizers import RegularizerTerm, scheduled_terms
from falsify.models.resnet import ResNet20Spec
from falsify.models.stacked import LOSS, NotExact, StackedNet, plan_loss, stack
from falsify.models.training import (
    TrainResult,
    _optimizer,
    _warmup,
    evaluate,
    one_thread,
    record_metrics,
)
from falsify.models.transformer import TransformerSpec
from falsify.units import CHANNELS, unit_view

__all__ = ["NotBatchable", "ensemble_speedup", "supports_ensemble", "train_ensemble"]


def supports_ensemble(population: Population) -> bool:
    """True when :func:`train_ensemble` reproduces this population's sequential recipe."""
    training = population.training
    # The stacked trainer adds the terms of regularizers that declare ``ensemble`` (their terms
    # read activations and labels only), in their windows; it trains no controls.
    reproduced = training.control == "none" and all(
        r.ensemble or not r.trains for r in training.regularizers()
    )
    # The stacked trainer keeps no checkpoints.
    no_checkpoints = not training.checkpoint_epochs
    return population.model.ensemble_ready() and reproduced and no_checkpoints


def ensemble_speedup(population: Population) -> float:
    """About how many times faster than sequential training an 8-seed ensemble of this
    population trains on one CPU thread, as measured by benchmarks/ensemble_training.py
    (docs/performance.md): dense nets are bound by per-operation overhead, which the ensemble
    pays once for all seeds (measured 2.8–3.4×); conv nets by their convolutions' arithmetic,
    which it does not reduce (cnn 1.6–2.3×; resnet20 1.0–1.3×, its convolutions no faster
    grouped than one replicate at a time); the transformer by its attention's batched products
    of thousands of tiny matrices, which it does not reduce either (1.2–1.25× in CPU time for
    the bundled recipes). The MLP with the selectivity term, batched across the replicates, measured 4.6×.
    The runner weighs it against the processes of ``--jobs``."""
    model = population.model
    if isinstance(model, MLPSpec):
        return 3.0
    return {TransformerSpec: 1.2, ResNet20Spec: 1.0}.get(type(model), 1.8)


class NotBatchable(Exception):
    """The recipe cannot be trained as an ensemble with the sequential arithmetic."""


def train_ensemble(
    population: Population,
    data: Dataset | StreamedDataset,
    seeds: list[int],
    device: torch.device,
    exact: bool = True,
) -> list[TrainResult]:
    """Train the replicates of ``seeds`` together; result ``i`` is seed ``seeds[i]``'s model.

    With ``exact`` (the default) every batched operation is checked to compute what the
    sequential one computes for one replicate, so each model's weights equal sequential
    training's bit for bit; ``exact=False`` always uses the batched operations (faster where the
    backend's batched kernels differ, equal to sequential training only to float rounding, which
    training then amplifies). Raises :class:`NotBatchable` when the recipe cannot be batched
    exactly.
    """
    with one_thread():  # as train_replicate: the thread count is part of the arithmetic
        return _train_ensemble(population, data, seeds, device, exact)


def _build(
    population: Population,
    data: Dataset | StreamedDataset,
    seeds: list[int],
    device: torch.device,
    exact: bool,
) -> StackedNet:
    models, gens = [], []
    for seed in seeds:
        with torch.random.fork_rng(devices=[device] if device.type == "cuda" else []):
            torch.manual_seed(seed)
            models.append(build_model(population.model, data.input_shape, data.n_classes))
            # Sequential training draws its dropout masks from the global RNG from here on.
            gens.append(torch.Generator().set_state(torch.get_rng_state()))
    net = stack([m.to(device) for m in models], gens, device, exact)
    if net is None:
        raise NotBatchable(f"no stacked version of {type(models[0]).__name__}")
    if net.dropout > 0 and device.type != "cpu":
        # Off the CPU, F.dropout draws its masks with a fused kernel from the device's RNG.
        raise NotBatchable("dropout masks are reproduced on the CPU only")
    return net


def _terms(
    net: StackedNet, terms: list[list[RegularizerTerm]], labels: torch.Tensor
) -> torch.Tensor:
    """The sum over replicates of each one's regularizer terms (``terms[s]``), each computed
    on replicate s's own layer outputs and batch labels (``labels[s]``), as
    :func:`falsify.models.training.train_replicate` computes it: for all replicates at once
    where the terms offer ``stacked`` and a probe finds its gradient equal to the
    per-replicate terms' (:func:`_stacked_terms_exact`), else replicate by replicate."""
    missing = sorted(net.keep - net.kept.keys())
    if missing:
        raise NotBatchable(f"the stacked network does not keep the outputs of {missing}")
    first = terms[0]
    if all(t == first for t in terms) and all(
        callable(getattr(term, "stacked", None)) for term in first
    ):
        key = ("terms", *first, *((n, tuple(h.shape), rows) for n, (h, rows) in net.kept.items()))
        probe = partial(_stacked_terms_exact, net, first, labels)
        if net._plan(key, probe, True, shared=False):
            outputs = {layer: net.unit_rows(h, rows) for layer, (h, rows) in net.kept.items()}
            return torch.stack([term.stacked(outputs, labels).sum() for term in first]).sum()
    replicates = {layer: net.replicate_outputs(layer) for layer in net.keep}
    total = torch.zeros((), device=labels.device)
    for i, replicate_terms in enumerate(terms):
        acts = {layer: out[i] for layer, out in replicates.items()}
        for term in replicate_terms:
            total = total + term(net.models[i], acts, labels[i])
    return total


def _stacked_terms_exact(
    net: StackedNet, terms: list[RegularizerTerm], labels: torch.Tensor
) -> bool:
    """Whether ``stacked``, on the kept outputs read through :meth:`StackedNet.unit_rows`,
    gives every replicate's layer outputs the gradient of its own terms bit for bit, probed on
    random non-negative outputs of the kept shapes and layouts and random labels (one
    replicate's batch of a single class, another's missing class 0). False for a layer whose
    units are read another way than :data:`falsify.units.CHANNELS`, which ``unit_rows`` reads."""
    if any(unit_view(net.models[0], layer) != CHANNELS for layer in net.kept):
        return False
    gen = torch.Generator().manual_seed(3)
    n_classes = max(getattr(term, "n_classes", 2) for term in terms)
    y = torch.randint(0, n_classes, labels.shape, generator=gen)
    y[0] = 1 % n_classes
    if len(y) > 1:
        y[1][y[1] == 0] = 1 % n_classes
    y = y.to(labels.device)
    layouts = {n: rows for n, (_, rows) in net.kept.items()}
    data = {n: torch.rand(h.shape, generator=gen).to(h.device) for n, (h, _) in net.kept.items()}
    stacked = {n: t.clone().requires_grad_() for n, t in data.items()}
    rows_of = {n: net.unit_rows(t, layouts[n]) for n, t in stacked.items()}
    torch.stack([term.stacked(rows_of, y).sum() for term in terms]).sum().backward()
    got = {
        n: net.split(t.grad if t.grad is not None else torch.zeros_like(t), layouts[n])
        for n, t in stacked.items()
    }
    replicates = {n: net.split(t, layouts[n]) for n, t in data.items()}
    for i, model in enumerate(net.models):
        single = {n: parts[i].clone().requires_grad_() for n, parts in replicates.items()}
        total = torch.zeros((), device=labels.device)
        for term in terms:
            total = total + term(model, single, y[i])
        total.backward()
        for n, t in single.items():
            want = t.grad if t.grad is not None else torch.zeros_like(t)
            if not torch.equal(got[n][i], want):
                return False
    return True


def _rows(x: Inputs, idx: torch.Tensor) -> torch.Tensor:
    """``x[idx]`` for streamed inputs and an index ``[S, B]``: ``[S, B, …]``."""
    rows = x[idx.flatten()]
    return rows.view(*idx.shape, *rows.shape[1:])


def _train_ensemble(
    population: Population,
    data: Dataset | StreamedDataset,
    seeds: list[int],
    device: torch.device,
    exact: bool,
) -> list[TrainResult]:
    if not supports_ensemble(population):
        raise NotBatchable("this recipe's regularizers or control train one seed at a time")
    net = _build(population, data, seeds, device, exact)
    has_batch_norm = any(
        isinstance(m, nn.modules.batchnorm._BatchNorm) for m in net.models[0].modules()
    )
    spec = population.training
    x = inputs_of(data, "train", device)  # a tensor, or read by index when streamed
    ys = torch.stack([training_labels(spec, data.y_train, data.n_classes, s) for s in seeds])
    ys = ys.to(device)
    n, s = ys.shape[1], len(seeds)
    # As falsify.models.training: a last batch of one is skipped under batch norm, and with
    # ``steps``, as many epochs as it takes, stopping after the last step.
    steps = -(-n // spec.batch_size) - int(has_batch_norm and n % spec.batch_size == 1)
    epochs = -(-spec.steps // max(steps, 1)) if spec.steps is not None else spec.epochs
    left = spec.steps
    opt = _optimizer([net.flat], spec)
    schedule = _warmup(opt, spec.warmup_steps)
    shuffles = [torch.Generator().manual_seed(seed) for seed in seeds]
    # Each replicate's regularizer terms, built from its own model as sequential training does.
    schedules = [scheduled_terms(spec, m, data.n_classes, steps) for m in net.models]
    net.keep = {layer for sched in schedules for _, t in sched for layer in t.layers}
    last = torch.zeros(s, dtype=torch.float64)
    try:
        for epoch in range(epochs):
            terms = [[t for r, t in sched if r.on_in_epoch(epoch)] for sched in schedules]
            orders = torch.stack([torch.randperm(n, generator=g) for g in shuffles]).to(device)
            total = torch.zeros(s, dtype=torch.float64, device=device)
            seen = 0
            for start in range(0, n, spec.batch_size):
                if left is not None and left == 0:
                    break
                idx = orders[:, start : start + spec.batch_size]  # [S, B]: each its own batch
                b = idx.shape[1]
                if b < 2 and has_batch_norm:
                    continue  # batch norm cannot normalize a batch of one
                for p in net.params.values():
                    p.grad = None
                logits = net.forward(x[idx] if torch.is_tensor(x) else _rows(x, idx))
                shape = tuple(logits.shape)
                k = net._plan(("loss", shape), partial(plan_loss, shape, device), 0)
                # Each replicate's own mean cross-entropy, with nn.CrossEntropyLoss's gradient
                # (labels [S, B], or [S, B, T] for sequences).
                yb = ys[torch.arange(s, device=device).unsqueeze(1), idx]
                losses = LOSS[k](logits, yb)
                loss = losses.sum()
                if any(terms):
                    loss = loss + _terms(net, terms, yb)
                loss.backward()
                net.gather_grad()
                opt.step()
                if schedule is not None:
                    schedule.step()
                # The reported loss as sequential training sums it: each replicate's own
                # F.cross_entropy value (the batched mean may differ in the last bit), in float64.
                with torch.no_grad():
                    values = losses if k == 1 else LOSS[1](logits, yb)
                    total += values.to(torch.float64) * b
                seen += b
                left = None if left is None else left - 1
            last = (total / (n if left is None else max(seen, 1))).cpu()
    except NotExact as err:
        raise NotBatchable("no batched arithmetic equals the sequential one here") from err
    net.write_back()
    results = []
    for i, model in enumerate(net.models):
        model.eval()
        acc = evaluate(model, inputs_of(data, "test", device), data.y_test.to(device))
        metrics = record_metrics(model, population, data, device)
        results.append(
            TrainResult(model=model, train_loss=float(last[i]), test_accuracy=acc, metrics=metrics)
        )
    return results
