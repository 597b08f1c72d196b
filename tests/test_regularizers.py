from __future__ import annotations

import hashlib
import json
import warnings
from pathlib import Path

import pytest
import torch

from falsify.cli.main import main
from falsify.data import load_dataset
from falsify.data.digits import DigitsData
from falsify.data.modular_addition import ModularAddition
from falsify.errors import FalsifyDeprecationWarning, HypothesisError
from falsify.hypothesis.conditions import expand
from falsify.hypothesis.loader import HypothesisFile, load, loads
from falsify.hypothesis.schema import Population, TrainingSpec
from falsify.measures.selectivity import selectivity_index
from falsify.models.ensemble import supports_ensemble
from falsify.models.mlp import MLP
from falsify.models.regularizers import (
    Selectivity,
    SelectivityTerm,
    batch_selectivity,
    build_regularizers,
    captured_activations,
)
from falsify.models.training import train_replicate
from falsify.models.transformer import TransformerSpec
from falsify.runner.cache import replicate_key
from falsify.runner.replicates import recipe_of

CPU = torch.device("cpu")
HYPOTHESES = Path(__file__).resolve().parents[1] / "hypotheses"


def test_batch_selectivity_matches_the_measure_on_class_means() -> None:
    act = torch.tensor([[2.0, 1.0], [4.0, 1.0], [0.0, 3.0], [1.0, 0.0]])
    y = torch.tensor([0, 0, 1, 2])
    # class means: c0 = [3, 1], c1 = [0, 3], c2 = [1, 0]
    # unit 0: (3 − 0.5)/(3 + 0.5); unit 1: (3 − 0.5)/(3 + 0.5)
    expected = (2.5 / 3.5 + 2.5 / 3.5) / 2
    assert batch_selectivity(act, y, n_classes=4).item() == pytest.approx(expected, abs=1e-6)
    means = torch.tensor([[3.0, 1.0], [0.0, 3.0], [1.0, 0.0]])
    assert batch_selectivity(act, y, 4).item() == pytest.approx(
        selectivity_index(means).mean().item()
    )
    # one class present: no selectivity, but still a tensor in the graph
    assert batch_selectivity(act, torch.zeros(4, dtype=torch.long), 4).item() == 0.0


def _mean_si(model: MLP, x: torch.Tensor, y: torch.Tensor) -> float:
    with torch.no_grad(), captured_activations(model, ["hidden1"]) as acts:
        model(x)
        return batch_selectivity(acts["hidden1"], y, 4).item()


@pytest.mark.parametrize("alpha", [5.0, -5.0])
def test_gradient_moves_selectivity_the_way_alpha_says(alpha: float) -> None:
    g = torch.Generator().manual_seed(0)
    x = torch.randn(256, 6, generator=g)
    y = torch.arange(256) % 4
    x[torch.arange(256), y] += 1.5
    torch.manual_seed(0)
    model = MLP(6, (16,), 4)
    term = SelectivityTerm(alpha, ("hidden1",), 4)
    before = _mean_si(model, x, y)
    opt = torch.optim.SGD(model.parameters(), lr=0.05)
    with captured_activations(model, term.layers) as acts:
        for _ in range(20):
            opt.zero_grad()
            model(x)
            term(model, acts, y).backward()  # the regularizer alone: its gradient's direction
            opt.step()
    after = _mean_si(model, x, y)
    if alpha > 0:
        assert after > before + 0.02
    else:
        assert after < before - 0.02


def test_switched_off_terms_are_not_built() -> None:
    model = MLP(4, (8, 8), 3)
    assert build_regularizers(TrainingSpec(), model, 3) == []
    (term,) = build_regularizers(TrainingSpec(selectivity=Selectivity(alpha=-2)), model, 3)
    assert term.layers == ("hidden1", "hidden2") and term.alpha == -2
    (term,) = build_regularizers(
        TrainingSpec(selectivity=Selectivity(alpha=1, layers=("hidden2",))), model, 3
    )
    assert term.layers == ("hidden2",)


def test_capture_keeps_the_graph_and_removes_its_hooks() -> None:
    model = MLP(4, (8,), 3)
    with captured_activations(model, ["hidden1"]) as acts:
        model(torch.randn(5, 4))
        assert acts["hidden1"].requires_grad
    assert all(not m._forward_hooks for m in model.modules())
    with pytest.raises(RuntimeError), captured_activations(model, ["hidden1"]):
        raise RuntimeError("boom")
    assert all(not m._forward_hooks for m in model.modules())


# --- the blocks of training, the old flat names, and the cache recipe ----------------------------

FILE = """\
id: spellings
claim: The old and the new spelling of a regularizer are one recipe.
population:
  data: {kind: digits}
  model: {kind: mlp, hidden: [8, 8]}
  training: {TRAINING}
  seeds: 2
  conditions: {GRID: [0, 1]}
test:
  kind: between_conditions
  outcome: {kind: accuracy}
  compare: {kind: reference, reference: {GRID: 0}}
prediction: {direction: positive, sesoi: 0.01}
"""
OLD = "epochs: 2, selectivity_layers: [hidden1], enmeshment_lambda: 0.5, enmeshment_k: 3"
NEW = "epochs: 2, selectivity: {layers: [hidden1]}, enmeshment: {lam: 0.5, k: 3}"


def _file(training: str, grid: str) -> str:
    return FILE.replace("TRAINING", training).replace("GRID", grid)


def _keys(hf: HypothesisFile) -> list[str]:
    return [
        replicate_key(recipe_of(c.population), s, CPU)
        for c in expand(hf.hypothesis.population)
        for s in hf.hypothesis.population.seeds
    ]


def test_old_and_new_spellings_are_one_population_and_one_key() -> None:
    with pytest.warns(FalsifyDeprecationWarning):
        old = loads(_file(OLD, "training.selectivity_alpha"))
    new = loads(_file(NEW, "training.selectivity.alpha"))
    assert old.hypothesis.population.training == new.hypothesis.population.training
    resolved = [[c.population for c in expand(hf.hypothesis.population)] for hf in (old, new)]
    assert resolved[0] == resolved[1]
    assert resolved[1][1].training.selectivity == Selectivity(alpha=1, layers=("hidden1",))
    assert _keys(old) == _keys(new) and len(set(_keys(new))) == 4
    # the grid keeps the key as written: conditions read as in the file
    assert [c.name for c in expand(new.hypothesis.population)][1] == "selectivity.alpha=1"


def test_a_setting_spelled_both_ways_is_refused() -> None:
    with pytest.raises(HypothesisError, match="not both"):
        loads(_file("selectivity: {alpha: 1}, selectivity_alpha: 2", "training.label_noise"))
    both = _file(NEW, "training.selectivity.alpha").replace(
        "  conditions: {", "  conditions: {training.selectivity_alpha: [2, 3], "
    )
    with pytest.raises(HypothesisError, match="same field"):
        loads(both)


def test_old_names_give_one_note_per_file(write, tmp_path, capsys) -> None:
    from falsify.cli.main import main

    old = write(_file(OLD + ", enmeshment_recluster_every: 5", "training.selectivity_alpha"))
    assert main(["check", str(old), "--cache", str(tmp_path)]) == 0
    notes = [line for line in capsys.readouterr().err.splitlines() if line.startswith("note:")]
    assert len(notes) == 1, notes
    assert str(old) in notes[0] and "'enmeshment_k' (now 'enmeshment.k')" in notes[0]
    new = write(_file(NEW, "training.selectivity.alpha"))
    assert main(["check", str(new), "--cache", str(tmp_path)]) == 0
    assert "note:" not in capsys.readouterr().err


def test_an_error_in_an_old_name_points_at_that_name() -> None:
    with pytest.raises(HypothesisError, match=r"'population.training.enmeshment_k' .*\(line 6\)"):
        loads(_file("enmeshment_k: 1", "training.label_noise"))


# The recipes (sorted-key JSON) the code before the blocks (commit ecff3f6) computed, printed by
# ``json.dumps(recipe_of(population), sort_keys=True, separators=(",", ":"))`` for these
# training sections of FILE (conditions aside); the blocks must give the same, so cached models
# keep their keys.
OLD_RECIPES = {
    "epochs: 2, selectivity_alpha: -1, selectivity_layers: [hidden1]": '{"data":{"kind":"digits","split_seed":0,"test_fraction":0.2},"model":{"batch_norm":false,"dropout":0.0,"hidden":[8,8],"kind":"mlp"},"training":{"batch_size":64,"epochs":2,"label_noise":0.0,"lr":0.001,"momentum":0.9,"optimizer":"adam","selectivity_alpha":-1.0,"selectivity_layers":["hidden1"],"weight_decay":0.0}}',
    "enmeshment_lambda: 0.5, enmeshment_layers: [hidden2], enmeshment_k: 3, "
    "enmeshment_recluster_every: 7, selectivity_alpha: 0.3, epochs: 30": '{"data":{"kind":"digits","split_seed":0,"test_fraction":0.2},"model":{"batch_norm":false,"dropout":0.0,"hidden":[8,8],"kind":"mlp"},"training":{"batch_size":64,"enmeshment_k":3,"enmeshment_lambda":0.5,"enmeshment_layers":["hidden2"],"enmeshment_recluster_every":7,"epochs":30,"label_noise":0.0,"lr":0.001,"momentum":0.9,"optimizer":"adam","selectivity_alpha":0.3,"selectivity_layers":[],"weight_decay":0.0}}',
    "enmeshment_k: 7, enmeshment_layers: [hidden1], epochs: 30": '{"data":{"kind":"digits","split_seed":0,"test_fraction":0.2},"model":{"batch_norm":false,"dropout":0.0,"hidden":[8,8],"kind":"mlp"},"training":{"batch_size":64,"epochs":30,"label_noise":0.0,"lr":0.001,"momentum":0.9,"optimizer":"adam","selectivity_alpha":0.0,"selectivity_layers":[],"weight_decay":0.0}}',
}
# sha256 of the newline-joined recipes of every condition of every bundled hypothesis (in file
# order), computed the same way at ecff3f6: 24 recipes.
BUNDLED_RECIPES_SHA256 = "04a5064c5824d949ee297126b1d3f20f01d10af6d96dad87f07b6547c1f2bf0d"


@pytest.mark.parametrize("training", list(OLD_RECIPES))
def test_recipes_are_those_of_before_the_blocks(training: str) -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FalsifyDeprecationWarning)
        hf = loads(_file(training, "training.label_noise"))
    population = expand(hf.hypothesis.population)[0].population  # label_noise 0, as then
    got = json.dumps(recipe_of(population), sort_keys=True, separators=(",", ":"))
    assert got == OLD_RECIPES[training]


# The bundled files of before the blocks; files added since have no older recipe to keep.
BEFORE_THE_BLOCKS = (
    "attribution_predicts_importance",
    "batchnorm_reduces_single_direction_reliance",
    "clusters_specialize",
    "enmeshment_increases_clusterability",
    "increasing_selectivity_hurts",
    "memorizing_nets_rely_on_single_directions",
    "selectivity_and_robustness",
    "selectivity_is_necessary",
    "selectivity_predicts_importance",
)


def test_bundled_recipes_are_those_of_before_the_blocks() -> None:
    texts = [
        json.dumps(recipe_of(c.population), sort_keys=True, separators=(",", ":"))
        for name in BEFORE_THE_BLOCKS
        for c in expand(load(HYPOTHESES / f"{name}.yaml").hypothesis.population)
    ]
    digest = hashlib.sha256("\n".join(texts).encode()).hexdigest()
    assert len(texts) == 24 and digest == BUNDLED_RECIPES_SHA256


def test_only_an_active_regularizer_records_what_it_achieved() -> None:
    data = load_dataset(DigitsData(kind="digits"))
    grid = loads(_file("epochs: 1", "training.selectivity.alpha")).hypothesis.population
    off, on = (c.population for c in expand(grid))
    assert train_replicate(off, data, 0, CPU).metrics == {}
    assert 0.0 <= train_replicate(on, data, 0, CPU).metrics["mean_selectivity"] <= 1.0
    # Its term reads activations and labels only: the stacked ensemble adds it per replicate.
    assert supports_ensemble(off) and supports_ensemble(on)


def test_selectivity_regularizes_a_transformer_on_the_answer_classes() -> None:
    # Modular addition scores one position per sequence: its answer is the class.
    data_spec = ModularAddition(kind="modular_addition", p=11, train_fraction=0.5)
    model = TransformerSpec(kind="transformer", d_model=8, n_heads=2, d_head=4, d_mlp=16)

    def pop(alpha: float) -> Population:
        training = TrainingSpec(
            steps=5,
            lr=0.01,
            selectivity={"alpha": alpha, "layers": ["blocks.0.mlp.hook_post"]},
        )
        return Population(data=data_spec, model=model, training=training, seeds=2)

    data = load_dataset(data_spec)
    plain, regularized = (train_replicate(pop(a), data, 0, CPU) for a in (0.0, -1.0))
    assert 0.0 <= regularized.metrics["mean_selectivity"] <= 1.0
    before, after = plain.model.state_dict(), regularized.model.state_dict()
    assert not all(torch.equal(before[k], after[k]) for k in before)


def test_selectivity_on_a_task_without_a_class_per_example_fails_at_check(
    tmp_path: Path, capsys
) -> None:
    # Induction scores every position of a sequence's second half: no class per example.
    text = (HYPOTHESES / "induction_heads_are_necessary.yaml").read_text()
    text = text.replace(
        "batch_size: 100}",
        "batch_size: 100, selectivity: {alpha: -1.0, layers: [blocks.0.attn.hook_z]}}",
    )
    path = tmp_path / "h.yaml"
    path.write_text(text)
    cache = tmp_path / "cache"
    assert main(["check", str(path), "--cache", str(cache), "--no-estimate"]) == 1
    err = capsys.readouterr().err.strip()
    line = next(i for i, s in enumerate(text.splitlines(), 1) if "selectivity:" in s)
    assert err.startswith(
        f"error: The 'population.training.selectivity' of {path} (line {line}) must be off for "
        "a task without a class per example (this one scores "
    )
    assert not any(cache.rglob("*.safetensors"))
