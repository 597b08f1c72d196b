"""The circuit measure and the ``circuit_size`` outcome, on the planted synthetic model, whose
essential units are known (falsify/models/planted.py)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from falsify.cli.main import main
from falsify.data.synthetic import SyntheticData, load_synthetic
from falsify.errors import FalsifyError
from falsify.hypothesis import load
from falsify.hypothesis.schema import Population
from falsify.interventions.engine import SweepResult
from falsify.measures import circuit as circuit_module
from falsify.measures.circuit import (
    CircuitSizeOutcome,
    find_circuit,
    first_verified,
    verified_retention,
)
from falsify.measures.model_level import TrainedModel
from falsify.models.mlp import MLPSpec
from falsify.models.planted import planted_model
from falsify.report import write_outcome
from falsify.runner import ModelCache, run_hypothesis
from falsify.runner.run import plan
from tests.helpers.populations import TINY_BETWEEN

SPEC = SyntheticData(kind="synthetic", n_classes=6, n_features=8, n_samples=1200)
FILE = Path(__file__).parents[1] / "hypotheses" / "enmeshment_yields_smaller_circuits.yaml"


@pytest.fixture(scope="module")
def planted() -> tuple[torch.nn.Module, dict[str, list[int]], torch.Tensor, torch.Tensor]:
    model, roles = planted_model(SPEC)
    data = load_synthetic(SPEC)
    return model, roles, data.x_test, data.y_test


@pytest.mark.parametrize("value", ["zero", "mean"])
def test_each_essential_class_has_its_one_essential_unit_as_circuit(planted, value) -> None:
    model, roles, x, y = planted
    for k, unit in enumerate(roles["essential"]):
        found = find_circuit(model, "hidden1", x, y, (k,), SPEC.n_classes, 0.9, value)
        assert found is not None and found.units == (unit,), (k, found)
        assert found.retained >= 0.9 and found.rejected == 0
        assert found.fraction == pytest.approx(1 / 15)  # 3 essential, 6 redundant, 6 silent


def test_the_essential_classes_together_need_exactly_the_essential_units(planted) -> None:
    model, roles, x, y = planted
    essential = tuple(range(len(roles["essential"])))
    found = find_circuit(model, "hidden1", x, y, essential, SPEC.n_classes, 0.9, "mean")
    assert found is not None and set(found.units) == set(roles["essential"])
    # no redundant or selective-but-unimportant unit is needed for these classes
    assert not set(found.units) & set(roles["redundant"] + roles["selective_unimportant"])


def test_a_redundant_class_keeps_one_of_its_two_copies(planted) -> None:
    model, roles, x, y = planted
    k = len(roles["essential"])  # the first class carried by two identical copies
    found = find_circuit(model, "hidden1", x, y, (k,), SPEC.n_classes, 0.9, "zero")
    assert found is not None and len(found.units) == 1
    assert found.units[0] in roles["redundant"][:2]


def test_verification_really_ablates_and_rejects_a_set_that_fails_q(planted) -> None:
    model, roles, x, y = planted
    unit = roles["essential"][0]

    def check(units: tuple[int, ...]) -> float:
        return verified_retention(model, "hidden1", x, y, (0,), units, SPEC.n_classes, "mean")

    assert check(()) < 0.5  # without its essential unit, class 0 is lost
    assert check((unit,)) >= 0.9
    assert first_verified([(), (unit,)], check, 0.9) == ((unit,), check((unit,)), 1)
    with pytest.raises(ValueError, match="keeps q"):
        first_verified([(), tuple(roles["redundant"])], check, 0.9)


def test_a_search_that_proposes_a_failing_set_is_caught_by_the_verification(
    planted, monkeypatch: pytest.MonkeyPatch
) -> None:
    """With a sweep that claims every ablation changes nothing, the search proposes the empty
    set; the verification (the reference loop, not the sweep) rejects it."""
    model, roles, x, y = planted

    def lying_sweep(model, layer, x, y, masks, fill, **_kw) -> SweepResult:
        intact = torch.tensor([float(len(x)), 0.0], dtype=torch.float64)
        return SweepResult(intact, intact.repeat(len(masks), 1), "lie", 0, 1)

    monkeypatch.setattr(circuit_module, "ablation_sweep", lying_sweep)
    found = find_circuit(model, "hidden1", x, y, (0,), SPEC.n_classes, 0.9, "mean")
    assert found is not None and found.rejected >= 1 and found.retained >= 0.9
    # every unit ranks equal (no loss change), so the prefixes grow in index order up to the
    # essential unit of class 0
    assert found.units == tuple(range(roles["essential"][0] + 1))


def test_the_outcome_is_the_mean_circuit_fraction_over_classes(planted) -> None:
    model = planted[0]
    data = load_synthetic(SPEC)
    pop = Population(data=SPEC, model=MLPSpec(kind="mlp", hidden=(15,)), seeds=(0, 1))
    trained = TrainedModel(model, pop, data, seed=0)
    spec = CircuitSizeOutcome(kind="circuit_size", classes=(0, 1, 2), value="zero")
    details = spec.details(trained)
    assert details["value"] == pytest.approx(1 / 15) and details["circuit_units"] == 1.0
    assert details["circuit_retained"] >= 0.9 and spec.compute(trained) == details["value"]
    together = spec.model_copy(update={"together": True}).details(trained)
    assert together["circuit_units"] == 3.0
    with pytest.raises(FalsifyError, match="'classes' of the circuit_size outcome"):
        CircuitSizeOutcome(kind="circuit_size", classes=(6,)).compute(trained)


def test_q_of_one_keeps_all_the_class_accuracy(planted) -> None:
    model, _, x, y = planted
    found = find_circuit(model, "hidden1", x, y, (0,), SPEC.n_classes, 1.0, "zero")
    assert found is not None and found.retained >= 1.0


@pytest.mark.parametrize(
    ("override", "needle"),
    [
        ("test.outcome.q=0", "greater than 0"),
        ("test.outcome.q=1.5", "less than or equal to 1"),
        ("test.outcome.layers=[hidden3]", "one of"),
    ],
)
def test_bad_circuit_fields_name_the_field_and_line(override, needle, tmp_path: Path) -> None:
    with pytest.raises(FalsifyError) as exc:
        plan(load(FILE, [override]), ModelCache(tmp_path), torch.device("cpu"))
    message = str(exc.value)
    assert needle in message and str(FILE) in message and "test.outcome" in message
    assert "line" in message


@pytest.mark.slow
def test_bundled_file_runs_fast_and_every_circuit_is_verified(tmp_path: Path) -> None:
    fast = [
        "population.seeds=2",
        "population.training.epochs=2",
        "population.model.hidden=[16, 16]",
    ]
    hf = load(FILE, fast)
    outcome = run_hypothesis(hf, ModelCache(tmp_path / "cache"), torch.device("cpu"), False)
    write_outcome(outcome, tmp_path / "reports")
    assert len(outcome.parts) == 2
    tidy = pd.read_csv(tmp_path / "reports" / f"{hf.hypothesis.id}.csv")
    assert (tidy["circuit_retained"] >= 0.9).all()
    assert ((tidy["outcome"] > 0) & (tidy["outcome"] <= 1)).all()
    # the outcome is a fraction of the 16 units: the mean size in units over 16
    assert np.allclose(tidy["outcome"], tidy["circuit_units"] / 16)


@pytest.mark.parametrize("where", ["outcome", "outcomes"])
def test_classes_beyond_the_data_fail_at_check(where, write, tmp_path: Path, capsys) -> None:
    # digits has classes 0..9: class 12 is refused by `falsify check`, before any training.
    circuit = "{kind: circuit_size, classes: [3, 12]}"
    if where == "outcome":
        text = TINY_BETWEEN.replace("{kind: accuracy, split: train}", circuit)
        field = "test.outcome.classes[1]"
    else:
        text = TINY_BETWEEN.replace(
            "  outcome: {kind: accuracy, split: train}\n",
            "  outcomes:\n    - {name: accuracy, outcome: {kind: accuracy}}\n"
            f"    - {{name: circuit, outcome: {circuit}}}\n",
        )
        field = "test.outcomes[1].outcome.classes[1]"
    path = write(text)
    line = next(i for i, s in enumerate(text.splitlines(), 1) if "circuit_size" in s)
    cache = tmp_path / "cache"
    assert main(["check", str(path), "--cache", str(cache), "--no-estimate"]) == 1
    err = capsys.readouterr().err.strip()
    assert err == (
        f"error: The '{field}' of {path} (line {line}) must be a class of the data (0..9). "
        "Got 12 instead."
    )
    assert not any(cache.rglob("*.safetensors"))
