"""scikit-learn's bundled handwritten digits: the embedded real dataset (no download)."""

from __future__ import annotations

from typing import ClassVar, Literal

import numpy as np
import torch
from pydantic import Field
from sklearn.datasets import load_digits

from falsify.data.base import Dataset, stratified_split
from falsify.hypothesis.kinds import DataKind, register
from falsify.hypothesis.types import Seed

__all__ = ["load_digits_dataset"]


@register
class DigitsData(DataKind):
    """scikit-learn's bundled 8×8 handwritten digits (1,797 images, 10 classes)."""

    kind: Literal["digits"]
    test_fraction: float = Field(0.2, gt=0.0, lt=1.0)
    split_seed: Seed = 0

    label: ClassVar[str] = "digits (scikit-learn)"
    docs: ClassVar[str] = "docs/file-format.md"

    def load(self) -> Dataset:
        return load_digits_dataset(self)


def load_digits_dataset(spec: DigitsData) -> Dataset:
    """1,797 8×8 grey images in [0, 1] (pixel counts 0–16 divided by 16), shape ``[n, 1, 8, 8]``.

    The split is stratified by class and fixed by ``spec.split_seed``, so every replicate of a
    population is trained and evaluated on the same images.
    """
    bunch = load_digits()
    x = (bunch.data.astype(np.float32) / 16.0).reshape(-1, 1, 8, 8)
    y = bunch.target.astype(np.int64)
    x_tr, x_te, y_tr, y_te = stratified_split(x, y, spec.test_fraction, spec.split_seed)
    return Dataset(
        name="digits",
        x_train=torch.from_numpy(x_tr),
        y_train=torch.from_numpy(y_tr),
        x_test=torch.from_numpy(x_te),
        y_test=torch.from_numpy(y_te),
        n_classes=10,
    )
