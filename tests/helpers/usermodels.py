"""A user's own model factory and data loaders, referenced from hypothesis files by import path
(``tests.helpers.usermodels:make_net``) the way a researcher's package would be."""

from __future__ import annotations

import torch
from sklearn.datasets import load_digits
from torch import nn
from torch.utils.data import TensorDataset

from falsify.errors import LocatedError


class Net(nn.Module):
    """Two named hidden layers, each ``Linear`` then ``ReLU`` inside a Sequential."""

    def __init__(self, width: int, n_in: int = 64, n_classes: int = 10) -> None:
        super().__init__()
        self.flat = nn.Flatten()
        self.body = nn.Sequential(nn.Linear(n_in, width), nn.ReLU())
        self.act2 = nn.Sequential(nn.Linear(width, width), nn.ReLU())
        self.out = nn.Linear(width, n_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.out(self.act2(self.body(self.flat(x))))


def make_net(width: int = 16) -> nn.Module:
    return Net(width)


class TokenNet(nn.Module):
    """A token-shaped layer: the 64 digit pixels as 8 tokens of 8, ``mix`` = ReLU(Linear) on
    each token, ``[batch, 8 tokens, width channels]``, averaged over tokens into ``out``.

    It declares no unit view: read on axis 1 its "units" would be the 8 positions; a file says
    ``units: {mix: {axis: -1}}`` to read the channels."""

    def __init__(self, width: int) -> None:
        super().__init__()
        self.mix = nn.Sequential(nn.Linear(8, width), nn.ReLU())
        self.out = nn.Linear(width, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # [batch, 64] -> [batch, 10]
        return self.out(self.mix(x.view(len(x), 8, 8)).mean(dim=1))


def make_tokens(width: int = 6) -> nn.Module:
    return TokenNet(width)


def not_a_model(width: int = 16) -> int:
    return width


def _digits(n_test: int) -> tuple[torch.Tensor, ...]:
    bunch = load_digits()
    x = torch.tensor(bunch.data, dtype=torch.float32) / 16.0
    y = torch.tensor(bunch.target, dtype=torch.int64)
    return x[n_test:], y[n_test:], x[:n_test], y[:n_test]


def load_tensors(n_test: int = 400) -> tuple[torch.Tensor, ...]:
    """(x_train, y_train, x_test, y_test): the digits, flattened to 64 features."""
    return _digits(n_test)


def load_datasets(n_test: int = 400) -> tuple[TensorDataset, TensorDataset]:
    x_tr, y_tr, x_te, y_te = _digits(n_test)
    return TensorDataset(x_tr, y_tr), TensorDataset(x_te, y_te)


def load_three(n_test: int = 400) -> tuple[torch.Tensor, ...]:
    return _digits(n_test)[:3]


def make_sequential(width: int = 8) -> nn.Module:
    """A plain Sequential: it declares no unit layers."""
    return nn.Sequential(nn.Flatten(), nn.Linear(64, width), nn.ReLU(), nn.Linear(width, 10))


class Refusing(Net):
    """Builds like :class:`Net` but refuses its ``width`` when first run, as a user's model
    might check its input at run time."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        width = self.out.in_features
        raise LocatedError(("population", "model", "kwargs", "width"), "at least 1000", width)


def make_refusing_net(width: int = 16) -> nn.Module:
    return Refusing(width)


def make_broken(width: int = 16) -> nn.Module:
    raise RuntimeError(f"my factory cannot build width {width}")


def load_broken(n_test: int = 400) -> tuple[torch.Tensor, ...]:
    raise ValueError(f"my loader cannot split off {n_test} test rows")
