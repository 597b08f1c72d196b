"""What the ensemble tests share: weights compared bit for bit, and a population trained both
as one stacked ensemble and seed by seed (docs/performance.md, "Ensemble training")."""

from __future__ import annotations

import torch

from falsify.data import Dataset
from falsify.hypothesis.schema import Population
from falsify.models.ensemble import train_ensemble
from falsify.models.training import TrainResult, train_replicate

CPU = torch.device("cpu")


def same_weights(a: torch.nn.Module, b: torch.nn.Module) -> bool:
    sa, sb = a.state_dict(), b.state_dict()
    return sa.keys() == sb.keys() and all(torch.equal(sa[k], sb[k]) for k in sa)


def assert_equals_sequential(
    pop: Population, data: Dataset
) -> list[tuple[TrainResult, TrainResult]]:
    """Train ``pop``'s seeds as one ensemble and one by one; each model's weights and buffers,
    train loss and test accuracy must be equal, and the members must differ. Returns the
    (ensemble, sequential) result of each seed for further checks."""
    together = train_ensemble(pop, data, list(pop.seeds), CPU)
    pairs = []
    for seed, ens in zip(pop.seeds, together, strict=True):
        seq = train_replicate(pop, data, seed, CPU)
        # Weights and batch norm's running statistics.
        assert same_weights(ens.model, seq.model), seed
        assert ens.train_loss == seq.train_loss
        assert ens.test_accuracy == seq.test_accuracy
        pairs.append((ens, seq))
    assert not same_weights(together[0].model, together[1].model)
    return pairs
