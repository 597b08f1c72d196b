"""The labels a replicate is trained on (label randomization, Morcos et al. 2018).

Here, beside the data, so that both training (:mod:`falsify.models.training`) and the
model-level measures (:mod:`falsify.measures.model_level`) use it without importing each other.
"""

from __future__ import annotations

import numpy as np
import torch

from falsify.hypothesis.schema import TrainingSpec

__all__ = ["training_labels"]

_LABEL_STREAM = 1  # tags the random stream of label randomization (see training_labels)


def training_labels(spec: TrainingSpec, y: torch.Tensor, n_classes: int, seed: int) -> torch.Tensor:
    """The labels a replicate is trained on: ``y`` with ``spec.label_noise`` of them randomized.

    Morcos et al. (2018): round(fraction · n) training examples, chosen by the seed, get a
    class drawn uniformly from all classes (so about 1/n_classes of them keep their true label
    by chance). The same seed gives the same labels; the training split is unchanged otherwise.
    """
    if spec.label_noise == 0:
        return y
    # A stream of its own: seeded with ``seed`` alone it would repeat the first epoch's
    # shuffle, and the randomized examples would all come first in that epoch.
    stream = np.random.SeedSequence([seed, _LABEL_STREAM]).generate_state(1)[0]
    g = torch.Generator().manual_seed(int(stream))
    n_random = round(spec.label_noise * len(y))
    which = torch.randperm(len(y), generator=g)[:n_random]
    out = y.clone()
    out[which] = torch.randint(0, n_classes, (n_random,), generator=g).to(y)
    return out
