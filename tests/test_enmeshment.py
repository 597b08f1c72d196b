from __future__ import annotations

import numpy as np
import pytest
import torch

from falsify.data import load_dataset
from falsify.data.digits import DigitsData
from falsify.hypothesis.schema import Population, TrainingSpec
from falsify.measures.clusterability import cluster_layer, clusterability, weight_module
from falsify.models.enmeshment import Enmeshment, EnmeshmentTerm
from falsify.models.mlp import MLP, MLPSpec
from falsify.models.regularizers import Selectivity, build_regularizers
from falsify.models.training import train_replicate
from falsify.runner.cache import replicate_key
from falsify.runner.replicates import recipe_of

CPU = torch.device("cpu")
POP = Population(
    data=DigitsData(kind="digits"),
    model=MLPSpec(kind="mlp", hidden=(24,)),
    training=TrainingSpec(epochs=2, batch_size=128, lr=0.01),
    seeds=(0, 1),
)


def _train(model: MLP, lam: float, x: torch.Tensor, y: torch.Tensor, steps: int) -> EnmeshmentTerm:
    term = EnmeshmentTerm(lam, ("hidden1",), 3, recluster_every=10_000)  # clusters fixed
    opt = torch.optim.SGD(model.parameters(), lr=0.05)
    for _ in range(steps):
        opt.zero_grad()
        loss = torch.nn.functional.cross_entropy(model(x), y) + term(model, {}, y)
        loss.backward()
        opt.step()
    return term


def test_a_few_steps_with_lambda_raise_clusterability_on_the_fixed_partition() -> None:
    g = torch.Generator().manual_seed(0)
    x, y = torch.randn(128, 12, generator=g), torch.arange(128) % 4
    results = {}
    for lam in (0.0, 5.0):
        torch.manual_seed(0)
        model = MLP(12, (18,), 4)
        fixed = cluster_layer(model, "hidden1", 3)
        before = float(clusterability(weight_module(model, "hidden1").weight.detach(), fixed))
        term = _train(model, lam, x, y, steps=15)
        held = term.clusters["hidden1"]
        assert term.steps == 15
        assert np.array_equal(held.rows, fixed.rows) and np.array_equal(held.cols, fixed.cols)
        after = float(clusterability(weight_module(model, "hidden1").weight.detach(), fixed))
        results[lam] = after - before
    assert results[5.0] > 0.05  # the penalty moves mass into the clusters
    assert results[5.0] > results[0.0] + 0.05  # and cross-entropy alone does not


def test_clusters_are_recomputed_on_schedule_and_held_in_between() -> None:
    torch.manual_seed(0)
    model = MLP(12, (18,), 4)
    term = EnmeshmentTerm(1.0, ("hidden1",), 3, recluster_every=3)
    seen = []
    for _ in range(7):
        before = term.clusters.get("hidden1")
        term(model, {}, torch.zeros(1, dtype=torch.long))
        seen.append(term.clusters["hidden1"] is not before)
        with torch.no_grad():  # new weights, so a re-clustering would find new clusters
            weight_module(model, "hidden1").weight.copy_(torch.randn(18, 12))
    # re-clustered on calls 1, 4, 7 only
    assert [i for i, s in enumerate(seen) if s] == [0, 3, 6]


def test_builder_defaults_to_every_unit_layer_and_once_per_epoch() -> None:
    model = MLP(4, (8, 8), 3)
    assert build_regularizers(TrainingSpec(enmeshment=Enmeshment(k=3)), model, 3, 11) == []
    (term,) = build_regularizers(TrainingSpec(enmeshment=Enmeshment(lam=0.5)), model, 3, 11)
    assert isinstance(term, EnmeshmentTerm)
    assert term.weight_layers == ("hidden1", "hidden2") and term.recluster_every == 11
    assert term.n_clusters == 4 and term.lam == 0.5
    spec = TrainingSpec(
        enmeshment=Enmeshment(lam=1, layers=("hidden2",), k=2, recluster_every=5),
        selectivity=Selectivity(alpha=-1),
    )
    sel, enm = build_regularizers(spec, model, 3, 11)  # the two terms compose
    assert sel.name == "selectivity" and enm.weight_layers == ("hidden2",)
    assert enm.recluster_every == 5 and enm.n_clusters == 2


def test_recipe_without_the_term_dumps_as_before_it_existed() -> None:
    recipe = recipe_of(POP)
    assert not any(k.startswith("enmeshment") for k in recipe["training"])
    key = replicate_key(recipe, 0, CPU)
    # settings of a switched-off term do not retrain; with the term on, each one does
    inert = POP.model_copy(
        update={"training": POP.training.model_copy(update={"enmeshment": Enmeshment(k=7)})}
    )
    assert replicate_key(recipe_of(inert), 0, CPU) == key
    on = POP.training.model_copy(update={"enmeshment": Enmeshment(lam=1.0)})
    on_k = POP.training.model_copy(update={"enmeshment": Enmeshment(lam=1.0, k=7)})
    keys = {
        replicate_key(recipe_of(POP.model_copy(update={"training": t})), 0, CPU) for t in (on, on_k)
    }
    assert len(keys | {key}) == 3


def test_training_with_the_term_raises_model_clusterability_on_digits() -> None:
    data = load_dataset(POP.data)
    plain = train_replicate(POP, data, 0, CPU)
    # λ = 0 is plain cross-entropy: the switched-off term's settings change no bit
    inert = POP.training.model_copy(update={"enmeshment": Enmeshment(k=7, recluster_every=1)})
    off = train_replicate(POP.model_copy(update={"training": inert}), data, 0, CPU)
    a, b = plain.model.state_dict(), off.model.state_dict()
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    spec = POP.training.model_copy(update={"enmeshment": Enmeshment(lam=20.0, k=3)})
    trained = train_replicate(POP.model_copy(update={"training": spec}), data, 0, CPU)

    def c(model: torch.nn.Module) -> float:
        w = weight_module(model, "hidden1").weight.detach()
        return float(clusterability(w, cluster_layer(model, "hidden1", 3)))

    assert c(trained.model) > c(plain.model) + 0.1
    assert trained.test_accuracy > 0.5  # still a working classifier


def test_enmeshment_layers_must_hold_one_weight_layer(write, tmp_path) -> None:
    from falsify.errors import FalsifyError
    from falsify.hypothesis import load
    from falsify.runner import ModelCache
    from falsify.runner.run import plan

    text = """\
id: enmeshment_on_an_activation
claim: An activation holds no weights, so it cannot be clustered.
population:
  data: {kind: digits}
  model: {kind: mlp, hidden: [8]}
  training: {epochs: 1, enmeshment_layers: [hidden1.act]}
  seeds: 2
  conditions: {training.enmeshment_lambda: [0, 1]}
test:
  kind: between_conditions
  outcome: {kind: clusterability, k: 2}
  compare: {kind: reference, reference: {training.enmeshment_lambda: 0}}
prediction: {direction: positive, sesoi: 0.1}
"""
    path = write(text)
    with pytest.raises(FalsifyError, match="exactly one, linear or conv") as exc:
        plan(load(path), ModelCache(tmp_path), CPU)
    assert "enmeshment_layers" in str(exc.value) and str(path) in str(exc.value)
    assert plan(load(write(text.replace(".act]", ".linear]"))), ModelCache(tmp_path), CPU)
