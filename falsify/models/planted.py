"""The hand-wired MLP that solves the ``synthetic`` dataset (:mod:`falsify.data.synthetic`).

Its one hidden layer has units with known roles, so that the framework's measures and
interventions can be checked against the truth:

- ``essential``: the only route from feature ``k`` to logit ``k`` for the first half of the
  classes; ablating one costs about ``1 / n_classes`` of the accuracy.
- ``redundant``: two identical copies carry each remaining class; ablating one copy leaves
  the decision unchanged at low noise (the other copy still outvotes every other logit; at the
  default noise 0.3 it costs about 1% accuracy), while ablating both costs the class.
- ``selective_unimportant``: one unit per class that fires almost only for that class (class
  selectivity > 0.9) but has no outgoing weight, so ablating it changes nothing, exactly.
"""

from __future__ import annotations

import torch

from falsify.data.synthetic import SyntheticData
from falsify.models.mlp import MLP, MLPSpec, build_mlp

__all__ = ["planted_model"]

_THRESHOLD = 0.3  # hidden bias: noise below this never activates a planted unit
_DEFAULT_CLASS_BIAS = 0.1  # a silent network predicts the last class, so ablation is visible


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
