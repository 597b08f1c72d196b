"""Deterministic training of one replicate from its recipe and seed."""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field, replace

import torch
import torch.nn.functional as F
from torch import nn

from falsify.data import Dataset
from falsify.data.base import IGNORE, per_example_scores
from falsify.data.labels import training_labels
from falsify.data.stream import Inputs, StreamedDataset, inputs_of, on_device
from falsify.hypothesis.schema import Population, TrainingSpec
from falsify.models import build_model
from falsify.models.controls import shuffle_weights
from falsify.models.regularizers import captured_activations, scheduled_terms

__all__ = ["TrainResult", "evaluate", "train_replicate", "training_labels"]


@dataclass(frozen=True)
class TrainResult:
    model: nn.Module
    train_loss: float  # mean cross-entropy over the last epoch
    test_accuracy: float
    # What its active regularizers achieved, e.g. {"mean_selectivity": ...}.
    metrics: dict[str, float] = field(default_factory=dict)
    # Epochs done -> the model as it was then (``training.checkpoint_epochs``), each measured
    # as the trained model is; empty without checkpoints.
    checkpoints: dict[int, TrainResult] = field(default_factory=dict)


def _optimizer(params: Iterable[torch.Tensor], spec: TrainingSpec) -> torch.optim.Optimizer:
    """The recipe's optimizer over ``params`` (a model's, or an ensemble's stacked weights)."""
    if spec.optimizer == "sgd":
        return torch.optim.SGD(
            params, lr=spec.lr, momentum=spec.momentum, weight_decay=spec.weight_decay
        )
    if spec.optimizer == "adamw":
        return torch.optim.AdamW(params, lr=spec.lr, weight_decay=spec.weight_decay)
    return torch.optim.Adam(params, lr=spec.lr, weight_decay=spec.weight_decay)


def _warmup(opt: torch.optim.Optimizer, steps: int) -> torch.optim.lr_scheduler.LambdaLR | None:
    """Linear warm-up: step ``s`` (from 0) runs at ``lr · min(1, (s + 1) / steps)``."""
    if steps == 0:
        return None
    return torch.optim.lr_scheduler.LambdaLR(opt, lambda s: min(1.0, (s + 1) / steps))


@torch.no_grad()
def evaluate(model: nn.Module, x: torch.Tensor | Inputs, y: torch.Tensor) -> float:
    """Accuracy of ``model`` on ``(x, y)`` in evaluation mode (at the scored positions of a
    sequence task, :func:`falsify.data.base.per_example_scores`); streamed inputs
    (:class:`falsify.data.stream.Inputs`) are read in batches of 1,024, and their per-example
    scores averaged as the in-memory ones are."""
    model.eval()
    if isinstance(x, Inputs):
        scores = torch.cat(
            [_scores(model(x[i : i + 1024]), y[i : i + 1024]) for i in range(0, len(x), 1024)]
        )
    else:
        scores = _scores(model(x), y)
    return scores.mean().item()


def _scores(logits: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    if logits.dim() == 2:
        return (logits.argmax(dim=1) == y).float()
    return per_example_scores(logits, y)[0]


def _cross_entropy(logits: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Mean cross-entropy over the examples, or over the scored positions of sequences (the
    unscored ones carry :data:`falsify.data.base.IGNORE`, cross-entropy's ``ignore_index``)."""
    if logits.dim() == 2:
        return F.cross_entropy(logits, y)
    return F.cross_entropy(logits.flatten(0, -2), y.flatten(), ignore_index=IGNORE)


def train_replicate(
    population: Population, data: Dataset | StreamedDataset, seed: int, device: torch.device
) -> TrainResult:
    """Build and train one model; the same population, seed and device give the same weights.

    The seed fixes the initial weights, the mini-batch order, dropout and the randomized
    labels. The loss is cross-entropy plus the recipe's regularizer terms
    (:mod:`falsify.models.regularizers`). A control (``training.control``, docs/methods.md) is
    applied here too: ``untrained`` skips the loop (the loss is then that of the initial weights
    on the training labels), ``shuffled`` shuffles each parameter tensor after training
    (:func:`falsify.models.controls.shuffle_weights`), and ``permuted_labels`` trains on permuted
    labels (:func:`falsify.data.labels.training_labels`). A regularizer with a ``window`` adds
    its term only in the epochs of its window. After each epoch of
    ``training.checkpoint_epochs`` (0: before the first) the weights are kept, and each
    checkpoint is returned as the replicate the recipe would give at that epoch (a control
    applied to it as to the trained model). The global RNG is forked so that
    training leaves no trace on the caller's random state. Training runs on one CPU thread: a
    CPU matrix product's summation order, and so its last bits, depend on the thread count, and
    a replicate must not depend on how many jobs shared the machine. ``data`` may be a
    :class:`falsify.data.stream.StreamedDataset`: each mini-batch is then fetched by index (the
    same rows in the same order), so the weights are those trained on the in-memory data, bit
    for bit (docs/performance.md, "Data that does not fit in memory").
    """
    with one_thread():
        return _train(population, data, seed, device)


@contextmanager
def one_thread() -> Iterator[None]:
    """Run the block on one CPU thread (training's thread count is part of its arithmetic)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(threads)


def record_metrics(
    model: nn.Module,
    population: Population,
    data: Dataset | StreamedDataset,
    device: torch.device,
) -> dict[str, float]:
    """What the recipe's active regularizers achieved, e.g. the mean class selectivity of a
    selectivity-regularized model (on the test split), so reports can show it; {} without."""
    achieving = [r for r in population.training.regularizers() if r.active and r.metric]
    if not achieving:
        return {}
    x_test, y_test = data.split("test")
    x_test, y_test = on_device(x_test, device), y_test.to(device)
    out: dict[str, float] = {}
    for regularizer in achieving:
        out |= regularizer.achieved(model, x_test, y_test, data.n_classes)
    return out


def _finish(
    model: nn.Module,
    population: Population,
    data: Dataset | StreamedDataset,
    seed: int,
    device: torch.device,
    loss: float,
) -> TrainResult:
    """The model as a replicate: its control applied (``shuffled``), then measured."""
    model.eval()
    if population.training.control == "shuffled":
        shuffle_weights(model, seed)
    acc = evaluate(model, inputs_of(data, "test", device), data.y_test.to(device))
    metrics = record_metrics(model, population, data, device)
    return TrainResult(model=model, train_loss=loss, test_accuracy=acc, metrics=metrics)


def _checkpoint(
    state: dict[str, torch.Tensor],
    population: Population,
    data: Dataset | StreamedDataset,
    seed: int,
    device: torch.device,
    loss: float,
) -> TrainResult:
    """A kept state as its own model (built under a forked RNG: building draws weights)."""
    with torch.random.fork_rng(devices=[device] if device.type == "cuda" else []):
        model = build_model(population.model, data.input_shape, data.n_classes).to(device)
    model.load_state_dict(state)
    return _finish(model, population, data, seed, device, loss)


def _train(
    population: Population, data: Dataset | StreamedDataset, seed: int, device: torch.device
) -> TrainResult:
    with torch.random.fork_rng(devices=[device] if device.type == "cuda" else []):
        torch.manual_seed(seed)
        model = build_model(population.model, data.input_shape, data.n_classes).to(device)
        shuffle = torch.Generator().manual_seed(seed)
        spec = population.training
        opt = _optimizer(model.parameters(), spec)
        schedule = _warmup(opt, spec.warmup_steps)
        has_batch_norm = any(
            isinstance(m, nn.modules.batchnorm._BatchNorm) for m in model.modules()
        )
        x = inputs_of(data, "train", device)  # a tensor, or fetched by index when streamed
        y = training_labels(spec, data.y_train, data.n_classes, seed).to(device)
        n = len(y)
        # Optimizer steps per epoch: a last batch of one is skipped under batch norm.
        steps = -(-n // spec.batch_size) - int(has_batch_norm and n % spec.batch_size == 1)
        scheduled = scheduled_terms(spec, model, data.n_classes, steps)
        last = 0.0
        # With ``steps``, as many epochs as it takes, stopping after the last step.
        epochs = -(-spec.steps // max(steps, 1)) if spec.steps is not None else spec.epochs
        if spec.control == "untrained":
            epochs = 0
        left = spec.steps
        wanted = set(spec.checkpoint_epochs)
        # epochs done -> (weights, mean training loss of the last epoch then)
        kept: dict[int, tuple[dict[str, torch.Tensor], float]] = {}
        if 0 in wanted:
            kept[0] = (_state(model), _initial_loss(model, x, y))
        layers = [layer for _, t in scheduled for layer in t.layers]
        with captured_activations(model, layers) as acts:
            for epoch in range(epochs):
                terms = [t for r, t in scheduled if r.on_in_epoch(epoch)]
                model.train()
                order = torch.randperm(n, generator=shuffle).to(device)
                total, seen = 0.0, 0
                for start in range(0, n, spec.batch_size):
                    if left is not None and left == 0:
                        break
                    idx = order[start : start + spec.batch_size]
                    if len(idx) < 2 and has_batch_norm:
                        continue  # batch norm cannot normalize a batch of one
                    opt.zero_grad(set_to_none=True)
                    ce = _cross_entropy(model(x[idx]), y[idx])
                    loss = ce
                    for term in terms:
                        loss = loss + term(model, acts, y[idx])
                    loss.backward()
                    opt.step()
                    if schedule is not None:
                        schedule.step()
                    total += ce.item() * len(idx)
                    seen += len(idx)
                    left = None if left is None else left - 1
                last = total / n if left is None else total / max(seen, 1)
                if epoch + 1 in wanted:
                    kept[epoch + 1] = (_state(model), last)
        if spec.control == "untrained":
            last = _initial_loss(model, x, y)
            # An untrained control is its initialization at every epoch.
            kept |= {e: (_state(model), last) for e in wanted}
        checkpoints = {
            e: _checkpoint(state, population, data, seed, device, loss)
            for e, (state, loss) in sorted(kept.items())
        }
        result = _finish(model, population, data, seed, device, last)
    return replace(result, checkpoints=checkpoints)


def _state(model: nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


@torch.no_grad()
def _initial_loss(model: nn.Module, x: torch.Tensor | Inputs, y: torch.Tensor) -> float:
    """Cross-entropy of the weights as they are on the training labels, in evaluation mode
    (streamed inputs are fetched whole for it)."""
    was_training = model.training
    model.eval()
    loss = _cross_entropy(model(x[:]), y).item()
    model.train(was_training)
    return loss
