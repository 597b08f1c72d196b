"""Control populations' weight transform: trained weights shuffled within each tensor.

``training.control: shuffled`` (docs/methods.md, "Control populations") trains each replicate
as its recipe says and then permutes the entries of every parameter tensor (each weight matrix,
conv kernel and bias on its own) with a generator seeded by the replicate's seed. Each layer
keeps its multiset of weights, so any statistic of the weight distribution is unchanged, while
the structure training put into it is destroyed: Filan et al. (2021)'s null distribution for
the clusterability of a trained network. The other two controls live where their step does:
``untrained`` skips the training loop (:mod:`falsify.models.training`), ``permuted_labels``
permutes the training labels (:mod:`falsify.data.labels`).
"""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

__all__ = ["shuffle_weights"]

_SHUFFLE_STREAM = 3  # tags the random stream of the weight shuffle (falsify.data.labels: 1, 2)


@torch.no_grad()
def shuffle_weights(model: nn.Module, seed: int) -> None:
    """Permute, in place, the entries of each of ``model``'s parameter tensors.

    One generator seeded by ``(seed, stream)`` draws a uniform random permutation per tensor,
    in ``named_parameters`` order, so the same seed shuffles the same way. Buffers (batch norm's
    running statistics) are left as trained.
    """
    state = np.random.SeedSequence([seed, _SHUFFLE_STREAM]).generate_state(1)[0]
    g = torch.Generator().manual_seed(int(state))
    for _, param in model.named_parameters():
        flat = param.detach().reshape(-1)
        order = torch.randperm(flat.numel(), generator=g).to(flat.device)
        param.copy_(flat[order].reshape(param.shape))
