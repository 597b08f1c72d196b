"""A generated classification task with planted ground truth.

Class ``k`` lights up input feature ``k``: ``x = onehot(y) padded to n_features + N(0, noise²)``.
Any model can be trained on it like on a real dataset. The hand-wired MLP that solves it with
hidden units of known roles is :func:`falsify.models.planted.planted_model`: it builds a model,
so it lives in the models layer, above the data.
"""

from __future__ import annotations

from typing import ClassVar, Literal

import torch
from pydantic import Field, model_validator

from falsify.data.base import Dataset, stratified_split
from falsify.hypothesis.kinds import DataKind, register
from falsify.hypothesis.types import Seed

__all__ = ["SyntheticData", "load_synthetic"]


@register
class SyntheticData(DataKind):
    """A generated task with planted ground truth (see :mod:`falsify.data.synthetic`)."""

    kind: Literal["synthetic"]
    n_samples: int = Field(2000, ge=20)
    n_classes: int = Field(4, ge=2)
    n_features: int = Field(16, ge=2)
    noise: float = Field(0.3, ge=0.0)
    test_fraction: float = Field(0.25, gt=0.0, lt=1.0)
    split_seed: Seed = 0

    label: ClassVar[str] = "synthetic task with planted ground truth"
    docs: ClassVar[str] = "docs/file-format.md"

    @model_validator(mode="after")
    def _enough_features(self) -> SyntheticData:
        if self.n_features < self.n_classes:
            raise ValueError(
                f"n_features at least n_classes ({self.n_classes}) so that each class has a feature"
            )
        if self.n_samples < 2 * self.n_classes:  # a stratified split needs two of each class
            raise ValueError(
                f"n_samples at least 2 × n_classes ({2 * self.n_classes}) so that both splits "
                "hold every class"
            )
        return self

    def load(self) -> Dataset:
        return load_synthetic(self)


def load_synthetic(spec: SyntheticData) -> Dataset:
    """Samples of shape ``[n, n_features]``, balanced classes, fixed by ``spec.split_seed``."""
    g = torch.Generator().manual_seed(spec.split_seed)
    y = torch.arange(spec.n_samples) % spec.n_classes
    y = y[torch.randperm(spec.n_samples, generator=g)]
    x = spec.noise * torch.randn(spec.n_samples, spec.n_features, generator=g)
    x[torch.arange(spec.n_samples), y] += 1.0
    x_tr, x_te, y_tr, y_te = stratified_split(
        x.numpy(), y.numpy(), spec.test_fraction, spec.split_seed
    )
    return Dataset(
        name="synthetic",
        x_train=torch.from_numpy(x_tr),
        y_train=torch.from_numpy(y_tr),
        x_test=torch.from_numpy(x_te),
        y_test=torch.from_numpy(y_te),
        n_classes=spec.n_classes,
    )
