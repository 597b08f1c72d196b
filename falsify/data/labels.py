"""The labels a replicate is trained on (label randomization, Morcos et al. 2018; the
``permuted_labels`` control, Zhang et al. 2017).

Here, beside the data, so that both training (:mod:`falsify.models.training`) and the
model-level measures (:mod:`falsify.measures.model_level`) use it without importing each other.
"""

from __future__ import annotations

import numpy as np
import torch

from falsify.hypothesis.schema import TrainingSpec

__all__ = ["training_labels"]

_LABEL_STREAM = 1  # tags the random stream of label randomization (see training_labels)
_PERMUTE_STREAM = 2  # tags the random stream of the permuted-labels control


def _generator(seed: int, stream: int) -> torch.Generator:
    # A stream of its own: seeded with ``seed`` alone it would repeat the first epoch's
    # shuffle, and the randomized examples would all come first in that epoch.
    state = np.random.SeedSequence([seed, stream]).generate_state(1)[0]
    return torch.Generator().manual_seed(int(state))


def training_labels(spec: TrainingSpec, y: torch.Tensor, n_classes: int, seed: int) -> torch.Tensor:
    """The labels a replicate is trained on: ``y`` with ``spec.label_noise`` of them randomized.

    Morcos et al. (2018): round(fraction · n) training examples, chosen by the seed, get a
    class drawn uniformly from all classes (so about 1/n_classes of them keep their true label
    by chance). The same seed gives the same labels; the training split is unchanged otherwise.

    With ``spec.control == "permuted_labels"`` the labels are first permuted across the
    training examples by a permutation the seed draws: the random-labels control of Zhang et
    al. (2017), as a permutation so each class keeps its frequency; nothing links an input to
    its label.
    """
    if spec.control == "permuted_labels":
        y = y[torch.randperm(len(y), generator=_generator(seed, _PERMUTE_STREAM)).to(y.device)]
    if spec.label_noise == 0:
        return y
    g = _generator(seed, _LABEL_STREAM)
    n_random = round(spec.label_noise * len(y))
    which = torch.randperm(len(y), generator=g)[:n_random]
    out = y.clone()
    out[which] = torch.randint(0, n_classes, (n_random,), generator=g).to(y)
    return out
