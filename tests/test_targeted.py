from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from scipy import stats

from falsify.cli.main import main
from falsify.data import load_dataset
from falsify.data.synthetic import SyntheticData
from falsify.errors import HypothesisError
from falsify.hypothesis import load
from falsify.hypothesis.schema import Prediction
from falsify.models.planted import planted_model
from falsify.shapes.targeted import (
    control_generator,
    paired_differences,
    pooled_parts,
    targeted_vs_random,
)
from falsify.stats import Verdict, decide
from falsify.stats.paired import cohens_dz, paired_t

# --- the paired statistic -------------------------------------------------------------------


def test_paired_t_matches_a_hand_derivation_and_scipy() -> None:
    # Hand: mean 2.5, sd √(5/3) = 1.29099, se 0.645497, t = 3.87298, df 3;
    # R: t.test(c(1, 2, 3, 4), alternative = "greater") gives p = 0.01523.
    est = paired_t([1.0, 2.0, 3.0, 4.0])
    assert est.estimate == pytest.approx(2.5)
    assert est.se == pytest.approx(0.645497, abs=1e-6)
    assert est.df == 3
    assert est.p_greater(0.0) == pytest.approx(0.01523, abs=1e-5)
    d = np.array([0.12, -0.03, 0.08, 0.15, 0.02])
    ref = stats.ttest_1samp(d, 0.1, alternative="less")
    assert paired_t(d).p_less(0.1) == pytest.approx(ref.pvalue, rel=1e-9)
    lo, hi = paired_t(d).ci(0.9)
    ci = stats.ttest_1samp(d, 0.0).confidence_interval(0.9)
    assert (lo, hi) == pytest.approx((ci.low, ci.high), rel=1e-9)
    # d_z = mean / sd = 2.5 / 1.29099
    assert cohens_dz([1.0, 2.0, 3.0, 4.0]) == pytest.approx(1.936492, abs=1e-6)
    assert np.isnan(cohens_dz([0.3, 0.3]))
    with pytest.raises(ValueError):
        paired_t([1.0])


def test_paired_t_keeps_the_type_i_error_at_alpha() -> None:
    # Null: the per-replicate differences are N(0, 1) (targeted = random), 5 replicates.
    rng = np.random.default_rng(0)
    p = np.array([paired_t(rng.normal(size=5)).p_greater(0.0) for _ in range(4000)])
    rate = (p < 0.05).mean()
    assert abs(rate - 0.05) < 4 * np.sqrt(0.05 * 0.95 / 4000)


# --- the planted task -------------------------------------------------------------------------

SPEC = SyntheticData(kind="synthetic", noise=0.1, n_samples=400)


def _permuted_planted(seed: int):
    """The planted model with its hidden units in a seed-dependent order (same function)."""
    model, roles = planted_model(SPEC)
    n = model.hidden1.linear.out_features
    perm = torch.randperm(n, generator=torch.Generator().manual_seed(seed))
    with torch.no_grad():
        model.hidden1.linear.weight.copy_(model.hidden1.linear.weight[perm])
        model.hidden1.linear.bias.copy_(model.hidden1.linear.bias[perm])
        model.head.weight.copy_(model.head.weight[:, perm])
    where = torch.argsort(perm)  # old unit index -> new position
    return model, {role: [int(where[u]) for u in units] for role, units in roles.items()}


def _planted_parts(rank: str, n_replicates: int):
    rows = []
    for seed in range(n_replicates):
        model, roles = _permuted_planted(seed)
        data = load_dataset(SPEC.model_copy(update={"split_seed": seed}))
        if rank == "knows":
            score = torch.zeros(10)
            score[roles["essential"]] = 1.0
        else:
            score = torch.rand(10, generator=torch.Generator().manual_seed(1000 + seed))
        groups = targeted_vs_random(
            model,
            "hidden1",
            data.x_test,
            data.y_test,
            {rank: score},
            [2],
            30,
            control_generator(0, seed, 0),
        )
        diffs = paired_differences(groups)
        diffs["part"] = f"{rank} k=2"
        rows.append(diffs)
    return pooled_parts(pd.concat(rows, ignore_index=True), 30)


def test_planted_essential_units_are_found_by_a_score_that_knows_them() -> None:
    # 2 essential units of 10: ablating both costs ~2 of 4 classes (accuracy drop ~0.5), while a
    # random pair costs much less on average, so targeted − random is large and positive.
    prediction = Prediction(direction="positive", sesoi=0.1)
    table, verdict = decide(_planted_parts("knows", 6), prediction)
    assert verdict is Verdict.SUPPORTED
    assert table["estimate"].iloc[0] > 0.1


def test_planted_essential_units_are_not_found_by_a_random_ranking() -> None:
    # A random ranking makes the "targeted" pair one more random pair: the true effect is 0, so
    # with enough replicates an effect of δ = 0.1 is ruled out.
    prediction = Prediction(direction="positive", sesoi=0.1)
    table, verdict = decide(_planted_parts("random", 40), prediction)
    assert verdict is Verdict.FALSIFIED
    assert abs(table["estimate"].iloc[0]) < 0.1


def test_random_groups_are_fixed_by_the_seeds() -> None:
    model, _ = planted_model(SPEC)
    data = load_dataset(SPEC)
    args = (model, "hidden1", data.x_test, data.y_test, {"s": torch.arange(10.0)}, [3], 8)
    a = targeted_vs_random(*args, control_generator(0, 1, 0))
    b = targeted_vs_random(*args, control_generator(0, 1, 0))
    c = targeted_vs_random(*args, control_generator(0, 2, 0))
    assert a.equals(b)
    assert not a["effect"].equals(c["effect"])
    # Score 0..9: the top 3 are units 7, 8, 9 (selective_unimportant ones: effect exactly 0).
    assert a[a["group"] == "targeted"]["effect"].tolist() == [0.0]


# --- the file and the command line -----------------------------------------------------------

TARGETED = """\
id: tiny_targeted
claim: Selective units matter more than random ones (a fast test population).
population:
  data: {kind: digits}
  model: {kind: mlp, hidden: [16]}
  training: {epochs: 3, batch_size: 128, lr: 0.01}
  seeds: 3
test:
  kind: targeted
  layers: [hidden1]
  scores: [{kind: class_selectivity}]
  k: [2, 0.25]
  draws: 6
prediction:
  direction: positive
  sesoi: 0.02
"""


def test_targeted_end_to_end(write, tmp_path: Path, capsys) -> None:
    out, cache = tmp_path / "reports", tmp_path / "cache"
    path = write(TARGETED)
    assert main(["run", str(path), "--out", str(out), "--cache", str(cache), "--quiet"]) == 0
    assert "(2 parts)" in capsys.readouterr().out
    summary = json.loads((out / "tiny_targeted.json").read_text())
    assert summary["shape"] == "targeted"
    assert [p["part"] for p in summary["parts"]] == [
        "hidden1 · class_selectivity · k = 2 units",
        "hidden1 · class_selectivity · k = 25% (4 units)",
    ]
    tidy = pd.read_csv(out / "tiny_targeted.csv")
    # Per seed: one targeted group per k, 6 random groups per k.
    assert len(tidy) == 3 * (2 + 2 * 6)
    assert set(tidy["group"]) == {"targeted", "random"}
    assert (out / "tiny_targeted.png").stat().st_size > 1000
    report = (out / "tiny_targeted.md").read_text()
    assert "targeted − random accuracy drop" in report
    # The report's estimate is the mean over seeds of targeted − mean(random), recomputed here.
    per_seed = []
    for _, g in tidy[tidy["k"] == 2].groupby("seed"):
        tgt = g[g["group"] == "targeted"]["effect"].iloc[0]
        per_seed.append(tgt - g[g["group"] == "random"]["effect"].mean())
    assert summary["parts"][0]["estimate"] == pytest.approx(np.mean(per_seed), abs=1e-6)


def test_k_larger_than_the_layer_names_file_and_field(write, tmp_path: Path, capsys) -> None:
    path = write(TARGETED.replace("k: [2, 0.25]", "k: [2, 16]"))
    assert main(["check", str(path), "--cache", str(tmp_path / "c")]) == 1
    err = capsys.readouterr().err
    assert str(path) in err and "'test.k[1]'" in err and "(line 12)" in err
    assert "fewer units than layer 'hidden1' has (16" in err and "Got 16 instead" in err


def test_sesoi_must_fit_an_accuracy_difference(write, tmp_path: Path, capsys) -> None:
    path = write(TARGETED.replace("sesoi: 0.02", "sesoi: 2"))
    assert main(["check", str(path), "--cache", str(tmp_path / "c")]) == 1
    err = capsys.readouterr().err
    assert "'prediction.sesoi'" in err and "(line 16)" in err and "accuracy units" in err


def test_two_k_giving_the_same_group_size_are_refused(write, tmp_path: Path, capsys) -> None:
    path = write(TARGETED.replace("k: [2, 0.25]", "k: [4, 0.25]"))
    assert main(["check", str(path), "--cache", str(tmp_path / "c")]) == 1
    assert "both are 4 units" in capsys.readouterr().err


@pytest.mark.parametrize(
    "edit,needle",
    [
        ("k: [2, 1.5]", "1.5 is neither"),
        ("k: [0, 2]", "0 is neither"),
        ("k: [2, 2]", "distinct k values"),
        ("kind: targetted", "Did you mean 'targeted'?"),
        ("scores: [{kind: class_selectivty}]", "Did you mean 'class_selectivity'"),
        ("scores: []", "at least one per-unit score"),
        ("k: []", "at least one k"),
    ],
)
def test_bad_targeted_fields(write, edit, needle) -> None:
    original = {
        "k:": "k: [2, 0.25]",
        "ki": "kind: targeted",
        "sc": "scores: [{kind: class_selectivity}]",
    }[edit[:2]]
    with pytest.raises(HypothesisError) as exc:
        load(write(TARGETED.replace(original, edit)))
    assert needle in str(exc.value)
    assert len(str(exc.value).splitlines()) == 1


def test_bundled_attribution_file_is_valid(tmp_path: Path, capsys) -> None:
    bundled = Path(__file__).parents[1] / "hypotheses" / "attribution_predicts_importance.yaml"
    assert main(["check", str(bundled), "--cache", str(tmp_path / "c")]) == 0
    assert "attribution_predicts_importance (targeted); 10 replicates" in capsys.readouterr().out
    test = load(bundled).hypothesis.test
    assert [s.kind for s in test.scores] == [
        "layer_conductance",
        "layer_integrated_gradients",
        "gradient_x_activation",
    ]
