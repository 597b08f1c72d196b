"""A user's map-style Dataset that is not a TensorDataset: items made one at a time."""

from __future__ import annotations

import torch
from sklearn.datasets import load_digits
from torch.utils.data import Dataset


class DigitItems(Dataset):
    """The digits as ``(x [64] float64, y int)`` items, fetched one by one (no ``__getitems__``)."""

    def __init__(self, rows: slice) -> None:
        bunch = load_digits()
        self.x = bunch.data[rows] / 16.0
        self.y = bunch.target[rows]

    def __len__(self) -> int:
        return len(self.y)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, int]:
        return torch.from_numpy(self.x[i]), int(self.y[i])


def load_items(n_test: int = 400) -> tuple[DigitItems, DigitItems]:
    return DigitItems(slice(n_test, None)), DigitItems(slice(None, n_test))


def load_unbatchable(n_test: int = 400) -> tuple[list[str], list[str]]:
    """Not Datasets at all."""
    return ["a"], ["b"]
