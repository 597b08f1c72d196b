"""A generated classification task with planted ground truth.

Class ``k`` lights up input feature ``k``: ``x = onehot(y) padded to n_features + N(0, noise²)``.
Any model can be trained on it like on a real dataset. :func:`planted_model` additionally
builds a hand-wired one-hidden-layer MLP that solves the task and whose units have known roles,
so that the framework's measures and interventions can be checked against the truth:

- ``essential``: the only route from feature ``k`` to logit ``k`` for the first half of the
  classes; ablating one costs about ``1 / n_classes`` of the accuracy.
- ``redundant``: two identical copies carry each remaining class; ablating one copy leaves
  the decision unchanged at low noise (the other copy still outvotes every other logit; at the
  default noise 0.3 it costs about 1% accuracy), while ablating both costs the class.
- ``selective_unimportant``: one unit per class that fires almost only for that class (class
  selectivity > 0.9) but has no outgoing weight, so ablating it changes nothing, exactly.
"""

from __future__ import annotations

from typing import ClassVar, Literal

import torch
from pydantic import Field, model_validator
from sklearn.model_selection import train_test_split

from falsify.data.base import Dataset
from falsify.hypothesis.kinds import DataKind, register
from falsify.models.mlp import MLP, MLPSpec, build_mlp

__all__ = ["load_synthetic", "planted_model"]

_THRESHOLD = 0.3  # hidden bias: noise below this never activates a planted unit
_DEFAULT_CLASS_BIAS = 0.1  # a silent network predicts the last class, so ablation is visible



@register
class SyntheticData(DataKind):
    """A generated task with planted ground truth (see :mod:`falsify.data.synthetic`)."""

    kind: Literal["synthetic"]
    n_samples: int = Field(2000, ge=20)
    n_classes: int = Field(4, ge=2)
    n_features: int = Field(16, ge=2)
    noise: float = Field(0.3, ge=0.0)
    test_fraction: float = Field(0.25, gt=0.0, lt=1.0)
    split_seed: int = Field(0, ge=0)

    label: ClassVar[str] = "synthetic task with planted ground truth"
    docs: ClassVar[str] = "docs/file-format.md"

    @model_validator(mode="after")
    def _enough_features(self) -> SyntheticData:
        if self.n_features < self.n_classes:
            raise ValueError(
                f"n_features at least n_classes ({self.n_classes}) so that each class has a feature"
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
    x_tr, x_te, y_tr, y_te = train_test_split(
        x.numpy(),
        y.numpy(),
        test_size=spec.test_fraction,
        stratify=y.numpy(),
        random_state=spec.split_seed,
    )
    return Dataset(
        name="synthetic",
        x_train=torch.from_numpy(x_tr),
        y_train=torch.from_numpy(y_tr),
        x_test=torch.from_numpy(x_te),
        y_test=torch.from_numpy(y_te),
        n_classes=spec.n_classes,
    )


def planted_model(spec: SyntheticData) -> tuple[MLP, dict[str, list[int]]]:
    """The hand-wired MLP for ``spec`` and the indices of ``hidden1``'s units by role."""
    c = spec.n_classes
    n_essential = c // 2
    roles: dict[str, list[int]] = {"essential": [], "redundant": [], "selective_unimportant": []}
    reads: list[int] = []  # the input feature each hidden unit reads
    out_weight: list[float] = []
    for k in range(c):
        if k < n_essential:
            roles["essential"].append(len(reads))
            reads.append(k)
            out_weight.append(2.0)
        else:
            for _ in range(2):
                roles["redundant"].append(len(reads))
                reads.append(k)
                out_weight.append(1.0)
    for k in range(c):
        roles["selective_unimportant"].append(len(reads))
        reads.append(k)
        out_weight.append(0.0)

    model = build_mlp(MLPSpec(kind="mlp", hidden=(len(reads),)), (spec.n_features,), c)
    with torch.no_grad():
        lin = model.hidden1.linear
        lin.weight.zero_()
        lin.weight[torch.arange(len(reads)), torch.tensor(reads)] = 1.0
        lin.bias.fill_(-_THRESHOLD)
        model.head.weight.zero_()
        model.head.weight[torch.tensor(reads), torch.arange(len(reads))] = torch.tensor(out_weight)
        model.head.bias.zero_()
        model.head.bias[c - 1] = _DEFAULT_CLASS_BIAS
    return model.eval(), roles
