from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest
import torch
from torch import nn

from falsify.cli.main import main
from falsify.hypothesis import load
from falsify.interventions import ablation_effects, random_masks, top_k_masks
from falsify.interventions.groups import activation_strata, matched_random_masks
from falsify.measures.activation import MeanActivation
from falsify.measures.selectivity import ClassSelectivity
from falsify.shapes.targeted import paired_differences, targeted_vs_random

N_UNITS, N_CLASSES = 40, 4


class _Readout(nn.Module):
    """A unit layer that is the input itself, read out linearly to class logits."""

    def __init__(self) -> None:
        super().__init__()
        self.layer = nn.Identity()
        self.head = nn.Linear(N_UNITS, N_CLASSES)
        with torch.no_grad():
            self.head.weight.copy_(torch.randn(N_CLASSES, N_UNITS, generator=_g(3)))
            self.head.bias.zero_()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.layer(x))


def _g(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def _activations(n: int = 800) -> tuple[torch.Tensor, torch.Tensor]:
    """Units 0–3 fire at 10 for one class each (selective, mean 2.5); units 4–7 at about 2.5
    for every class (strong, unselective); the other 32 are weak noise in [0, 1]."""
    y = torch.arange(n) % N_CLASSES
    x = torch.rand(n, N_UNITS, generator=_g(0))
    x[:, :4] = 10.0 * nn.functional.one_hot(y, N_CLASSES)
    x[:, 4:8] = 2.0 + x[:, 4:8]
    return x, y


def _groups(x: torch.Tensor, y: torch.Tensor):
    model = _Readout().eval()
    selectivity = ClassSelectivity(kind="class_selectivity").measure(
        model, "layer", x, y, N_CLASSES
    )
    activation = MeanActivation(kind="mean_activation").measure(model, "layer", x, y, N_CLASSES)
    return model, selectivity, activation


def test_matched_groups_have_the_targeted_groups_activation_and_unmatched_do_not() -> None:
    x, y = _activations()
    _, selectivity, activation = _groups(x, y)
    target = top_k_masks(selectivity, [4])[0]
    assert target[:4].all() and target.sum() == 4  # the selective units, mean activation 2.5
    strata = activation_strata(activation, 5)
    matched = matched_random_masks(strata, target, 200, _g(1))
    unmatched = random_masks(N_UNITS, 4, 200, _g(1))
    assert (matched.sum(dim=1) == 4).all()

    def group_mean(masks: torch.Tensor) -> torch.Tensor:
        return (masks.float() @ activation) / masks.sum(dim=1)

    tgt = float(activation[target].mean())
    assert group_mean(matched).mean() == pytest.approx(tgt, abs=0.1)
    assert group_mean(unmatched).mean() < tgt - 1.0
    # The top stratum holds the 8 strong units, so matched groups are drawn among them and
    # differ from the targeted group itself.
    assert not (matched == target).all(dim=1).all()
    assert matched[:, 8:].sum() == 0


def test_strata_are_equal_count_bins_of_the_activation_ranks() -> None:
    strata = activation_strata(torch.tensor([5.0, 0.0, 0.0, 3.0, 1.0, 2.0]), 3)
    # Ranks (ties by index): 1, 2, 4, 5, 3, 0 -> strata [2, 0, 0, 2, 1, 1].
    assert strata.tolist() == [2, 0, 0, 2, 1, 1]
    assert activation_strata(torch.arange(3.0), 10).tolist() == [0, 1, 2]


def test_matched_rows_carry_their_score_and_pair_with_it() -> None:
    x, y = _activations(200)
    model, selectivity, activation = _groups(x, y)
    scores = {"sel": selectivity, "act": activation}
    strata = activation_strata(activation, 5)
    groups = targeted_vs_random(model, "layer", x, y, scores, [4], 5, _g(2), strata=strata)
    random = groups[groups["group"] == "random"]
    assert sorted(set(random["score"])) == ["act", "sel"] and len(random) == 10
    diffs = paired_differences(groups)
    for name in scores:
        rows = groups[groups["score"] == name]
        tgt = rows[rows["group"] == "targeted"]["effect"].iloc[0]
        mean = rows[rows["group"] == "random"]["effect"].mean()
        assert diffs.set_index("score").loc[name, "difference"] == pytest.approx(tgt - mean)


def test_the_default_draws_the_same_groups_as_before() -> None:
    # Unmatched groups: for each k, random_masks(units, k, draws) from the one generator,
    # exactly the sequence the shape drew before matching existed.
    x, y = _activations(200)
    model, selectivity, _ = _groups(x, y)
    groups = targeted_vs_random(model, "layer", x, y, {"s": selectivity}, [2, 4], 3, _g(5))
    g = _g(5)
    masks = torch.cat(
        [top_k_masks(selectivity, [2, 4])] + [random_masks(N_UNITS, k, 3, g) for k in (2, 4)]
    )
    expected = ablation_effects(model, "layer", x, y, masks).numpy()
    assert groups["effect"].tolist() == pytest.approx(expected.tolist(), abs=0)
    assert set(groups[groups["group"] == "random"]["score"]) == {""}


TARGETED = """\
id: tiny_matched
claim: Selective units matter more than random ones of like activation (a fast test).
population:
  data: {kind: digits}
  model: {kind: mlp, hidden: [16]}
  training: {epochs: 3, batch_size: 128, lr: 0.01}
  seeds: 3
test:
  kind: targeted
  layers: [hidden1]
  scores: [{kind: class_selectivity}]
  k: [2]
  draws: 4
  random: {match: activation, strata: 4}
prediction:
  direction: positive
  sesoi: 0.02
"""


def test_matched_file_runs_and_says_so(write, tmp_path: Path) -> None:
    out = tmp_path / "reports"
    path = write(TARGETED)
    code = main(["run", str(path), "--out", str(out), "--cache", str(tmp_path / "c"), "--quiet"])
    assert code == 0
    tidy = pd.read_csv(out / "tiny_matched.csv", keep_default_na=False)
    assert len(tidy) == 3 * (1 + 4)
    assert set(tidy[tidy["group"] == "random"]["score"]) == {"class_selectivity"}
    assert (
        "matched to its targeted group on mean activation" in (out / "tiny_matched.md").read_text()
    )
    assert json.loads((out / "tiny_matched.json").read_text())["n_replicates"] == 3


def test_the_default_leaves_the_file_as_it_was(write) -> None:
    plain = load(write(TARGETED.replace("  random: {match: activation, strata: 4}\n", "")))
    assert plain.hypothesis.test.random.match == "size"
    dumped = plain.hypothesis.model_dump(mode="json", exclude_defaults=True)
    assert "random" not in dumped["test"]


def test_too_many_strata_name_the_field(write, tmp_path: Path, capsys) -> None:
    path = write(TARGETED.replace("strata: 4", "strata: 9"))
    assert main(["check", str(path), "--cache", str(tmp_path / "c")]) == 1
    err = capsys.readouterr().err
    assert "'test.random.strata'" in err and "at most 8" in err
