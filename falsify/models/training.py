"""Deterministic training of one replicate from its recipe and seed."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from falsify.data import Dataset
from falsify.hypothesis.schema import Population, TrainingSpec
from falsify.models import build_model

__all__ = ["TrainResult", "evaluate", "train_replicate"]


@dataclass(frozen=True)
class TrainResult:
    model: nn.Module
    train_loss: float  # mean cross-entropy over the last epoch
    test_accuracy: float


def _optimizer(model: nn.Module, spec: TrainingSpec) -> torch.optim.Optimizer:
    if spec.optimizer == "sgd":
        return torch.optim.SGD(
            model.parameters(), lr=spec.lr, momentum=spec.momentum, weight_decay=spec.weight_decay
        )
    return torch.optim.Adam(model.parameters(), lr=spec.lr, weight_decay=spec.weight_decay)


@torch.no_grad()
def evaluate(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> float:
    """Accuracy of ``model`` on ``(x, y)`` in evaluation mode."""
    model.eval()
    return (model(x).argmax(dim=1) == y).float().mean().item()


def train_replicate(
    population: Population, data: Dataset, seed: int, device: torch.device
) -> TrainResult:
    """Build and train one model; the same population, seed and device give the same weights.

    The seed fixes the initial weights, the mini-batch order and dropout. The global RNG is
    forked so that training leaves no trace on the caller's random state.
    """
    with torch.random.fork_rng(devices=[device] if device.type == "cuda" else []):
        torch.manual_seed(seed)
        model = build_model(population.model, data.input_shape, data.n_classes).to(device)
        shuffle = torch.Generator().manual_seed(seed)
        spec = population.training
        opt = _optimizer(model, spec)
        loss_fn = nn.CrossEntropyLoss()
        x, y = data.x_train.to(device), data.y_train.to(device)
        n = len(y)
        last = 0.0
        # Not just the MLP's ``batch_norm`` flag: ResNets and user models carry their own.
        has_bn = any(isinstance(m, nn.modules.batchnorm._BatchNorm) for m in model.modules())
        for _ in range(spec.epochs):
            model.train()
            order = torch.randperm(n, generator=shuffle).to(device)
            total = 0.0
            for start in range(0, n, spec.batch_size):
                idx = order[start : start + spec.batch_size]
                if len(idx) < 2 and has_bn:
                    continue  # batch norm cannot normalize a batch of one
                opt.zero_grad(set_to_none=True)
                loss = loss_fn(model(x[idx]), y[idx])
                loss.backward()
                opt.step()
                total += loss.item() * len(idx)
            last = total / n
        model.eval()
        acc = evaluate(model, data.x_test.to(device), data.y_test.to(device))
    return TrainResult(model=model, train_loss=last, test_accuracy=acc)
