"""The cluster-specialization test shape and its bundled file, in a fast configuration."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from falsify.errors import FalsifyError
from falsify.hypothesis import load
from falsify.report import write_outcome
from falsify.runner import ModelCache, run_hypothesis
from falsify.runner.run import plan

FILE = Path(__file__).parents[1] / "hypotheses" / "clusters_specialize.yaml"
FAST = [
    "population.seeds=3",
    "population.training.epochs=4",
    "population.training.lr=0.01",
    "population.training.batch_size=128",
    "population.model.hidden=[16, 16]",
    "population.training.enmeshment.k=3",
    "test.k=3",
    "test.draws=8",
]


@pytest.mark.slow
def test_bundled_clusters_specialize_runs_fast(tmp_path: Path) -> None:
    hf = load(FILE, FAST)
    outcome = run_hypothesis(hf, ModelCache(tmp_path / "cache"), torch.device("cpu"), False)
    write_outcome(outcome, tmp_path / "reports")
    assert list(outcome.parts["part"]) == ["hidden1", "hidden2"]
    assert outcome.verdict.value in {"SUPPORTED", "FALSIFIED", "INCONCLUSIVE"}
    assert (outcome.replicates["test_accuracy"] > 0.5).all()  # real, trained classifiers
    tidy = pd.read_csv(tmp_path / "reports" / "clusters_specialize.csv")
    assert set(tidy.columns) >= {"seed", "layer", "cluster", "size", "specialization"}
    # per layer and seed, the cluster sizes add up to the layer's units
    assert (tidy.groupby(["layer", "seed"])["size"].sum() == 16).all()
    # the replicate statistic is the mean over its clusters of cluster − random, and a part's
    # estimate is the mean of its replicates' statistics
    for row in outcome.replicates.itertuples():
        mine = tidy[(tidy.layer == row.part) & (tidy.seed == row.seed)].dropna(
            subset=["difference"]
        )
        assert row.statistic == pytest.approx(mine["difference"].mean(), nan_ok=True)
        assert row.statistic == pytest.approx(row.cluster_mean - row.random_mean, nan_ok=True)
    for part in outcome.parts.itertuples():
        stats = outcome.replicates.loc[outcome.replicates.part == part.part, "statistic"]
        assert part.estimate == pytest.approx(np.nanmean(stats))
        assert part.ci_low <= part.estimate <= part.ci_high
    for layer in ("hidden1", "hidden2"):
        png = tmp_path / "reports" / f"clusters_specialize-damage-{layer}.png"
        assert png.stat().st_size > 1000


@pytest.mark.parametrize(
    "override,needle",
    [
        ("test.k=17", "at most 16"),
        ("test.m=10", "below the number of classes"),
        ("test.layers=[hidden3]", "one of"),
        ("test.draws=1", "greater than or equal to 2"),
    ],
)
def test_bad_specialization_files_name_the_field(override, needle, tmp_path: Path) -> None:
    hf_over = [*FAST, override]
    with pytest.raises(FalsifyError) as exc:
        plan(load(FILE, hf_over), ModelCache(tmp_path), torch.device("cpu"))
    assert needle in str(exc.value) and str(FILE) in str(exc.value)


PLANTED = """\
id: planted
claim: Class-aligned weight clusters specialize.
population:
  data: {kind: synthetic, n_classes: 4, n_features: 4, noise: 0.35, n_samples: 800}
  model: {kind: mlp, hidden: [12]}
  seeds: 3
test: {kind: cluster_specialization, layers: [hidden1], k: 4, draws: 40}
prediction: {direction: positive, sesoi: 0.05}
"""


def _block_model(seed: int, aligned: bool) -> torch.nn.Module:
    """3 hidden units per class, each reading its class's feature (plus a little noise).

    ``aligned``: each unit votes for the class whose feature it reads, so a weight cluster
    (the units reading one feature) is that class's route. Otherwise every class's logit reads
    one unit of each of three feature blocks, so a cluster's damage spreads over classes.
    """
    from falsify.models.mlp import MLP

    g = torch.Generator().manual_seed(seed)
    model = MLP(4, (12,), 4)
    reads = torch.arange(12) // 3  # unit -> the feature it reads
    votes = reads if aligned else (reads + torch.arange(12) % 3) % 4
    with torch.no_grad():
        lin = model.hidden1.linear
        lin.weight.copy_(0.02 * torch.rand(12, 4, generator=g))
        lin.weight[torch.arange(12), reads] = 1.0
        lin.bias.fill_(-0.3)
        model.head.weight.zero_()
        model.head.weight[votes, torch.arange(12)] = 1.0
        model.head.bias.zero_()
    return model.eval()


@pytest.mark.parametrize("aligned", [True, False])
def test_planted_clusters_specialize_only_when_aligned_with_classes(
    aligned: bool, write, tmp_path: Path
) -> None:
    from falsify.data import load_dataset
    from falsify.runner.replicates import Replicate
    from falsify.shapes.base import run_shape

    hf = load(write(PLANTED))
    data = load_dataset(hf.hypothesis.population.data)
    reps = [
        Replicate(
            seed=s,
            model=_block_model(s, aligned),
            key="",
            cache_hit=False,
            test_accuracy=0.0,
            train_loss=0.0,
        )
        for s in (0, 1, 2)
    ]
    evidence, parts, verdict = run_shape(hf, data, reps)
    # the co-clustering recovers the four blocks of three units
    assert (evidence.tidy["size"] == 3).all()
    estimate = float(parts["estimate"].iloc[0])
    if aligned:
        assert estimate > 0.2 and verdict.value == "SUPPORTED"
    else:
        assert estimate < 0.05 and verdict.value != "SUPPORTED"
