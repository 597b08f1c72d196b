"""Contract tests generated from the kinds' registries (docs/extending.md).

Every registered kind — built-in or plugin — is checked here without anyone writing a test
for it: it has a label and a docs page that mentions it; it validates from its declared
example; every per-unit measure, per-unit effect and model-level outcome runs on a real model
normally and with a forced error and leaves no hook behind and the weights unchanged; every
shape has a calibration simulator and a figure the report can draw; every constrained field,
given a bad value in a YAML file, yields one line naming the file, the line and the field;
every regularizer that declares ``ensemble`` trains as a stacked ensemble bit for bit.
"""

from __future__ import annotations

import typing
from pathlib import Path

import annotated_types
import pytest
import torch
import yaml

from falsify.data import load_dataset
from falsify.data.induction import InductionTask
from falsify.data.synthetic import SyntheticData
from falsify.errors import HypothesisError
from falsify.hypothesis import loader
from falsify.hypothesis.kinds import (
    OUTCOMES,
    REGISTRIES,
    SHAPES,
    UNIT_EFFECTS,
    UNIT_MEASURES,
    Kind,
)
from falsify.hypothesis.schema import Population, TrainingSpec
from falsify.measures.model_level import TrainedModel
from falsify.models import build_model
from falsify.models.ensemble import supports_ensemble
from falsify.models.mlp import MLPSpec
from falsify.models.planted import planted_model
from falsify.models.transformer import TransformerSpec
from falsify.report.drawers import DRAWERS
from falsify.report.kinds import kinds_markdown
from falsify.stats.calibration import SIMULATORS
from tests.ensembles import assert_equals_sequential

ROOT = Path(__file__).resolve().parents[1]
ALL = [(slot, tag, cls) for slot, reg in REGISTRIES.items() for tag, cls in reg.items()]
IDS = [f"{slot}:{tag}" for slot, tag, _ in ALL]
SPEC = SyntheticData(kind="synthetic", noise=0.1, n_samples=200)


def _instance(cls: type[Kind]) -> Kind:
    return cls.model_validate({"kind": cls.tag(), **cls.example})


def _hooks(model: torch.nn.Module) -> int:
    return sum(len(m._forward_hooks) + len(m._forward_pre_hooks) for m in model.modules())


# slot -> the method its kinds implement
METHODS = {
    "datasets": "load",
    "architectures": "build",
    "unit_measures": "measure",
    "unit_effects": "effects",
    "outcomes": "compute",
    "contrasts": "fit",
    "shapes": "evidence",
    "regularizers": "build",
}


def test_every_slot_names_its_method() -> None:
    assert set(METHODS) == set(REGISTRIES)


@pytest.mark.parametrize(("slot", "tag", "cls"), ALL, ids=IDS)
def test_every_kind_has_an_implementation(slot: str, tag: str, cls: type[Kind]) -> None:
    base = REGISTRIES[slot].base
    # A shape may implement its evidence in two halves, per replicate and pooled (shapes/base.py).
    method = "pooled_evidence" if slot == "shapes" and cls.splits_evidence() else METHODS[slot]
    assert getattr(cls, method) is not getattr(base, method, None), tag


@pytest.mark.parametrize(("slot", "tag", "cls"), ALL, ids=IDS)
def test_every_kind_has_a_label_docs_and_a_valid_example(
    slot: str, tag: str, cls: type[Kind]
) -> None:
    assert cls.label.strip()
    assert (ROOT / cls.docs).is_file(), f"{tag}: docs page {cls.docs} does not exist"
    if not cls.import_path_key:
        assert _instance(cls).kind == tag


def test_docs_list_every_builtin_kind() -> None:
    # Regenerate with: falsify kinds --builtin > docs/kinds.md
    assert (ROOT / "docs" / "kinds.md").read_text() == kinds_markdown(builtin_only=True)


@pytest.mark.parametrize(("tag", "cls"), SHAPES.items(), ids=list(SHAPES))
def test_every_shape_has_a_simulator_and_a_figure(tag: str, cls: type[Kind]) -> None:
    assert cls.simulator in {s.shape for s in SIMULATORS if s.offered}, tag
    assert cls.figure in DRAWERS, tag


@pytest.mark.parametrize(("tag", "cls"), OUTCOMES.items(), ids=list(OUTCOMES))
def test_every_outcome_detail_figure_can_be_drawn(tag: str, cls: type[Kind]) -> None:
    assert cls.detail_figure in ("", *DRAWERS), tag


def _runs(slot: str, kind: Kind, model: torch.nn.Module) -> object:
    if getattr(kind, "needs_sequences", False):
        return _runs_on_sequences(slot, kind, model)
    data = load_dataset(SPEC)
    x, y = data.x_test[:60], data.y_test[:60]
    if slot == "unit_measures":
        return kind.measure(model, "hidden1", x, y, SPEC.n_classes)
    if slot == "unit_effects":
        return kind.effects(model, "hidden1", x, y)
    population = loader.loads(_hypothesis({"kind": "accuracy"})).hypothesis.population
    return kind.compute(TrainedModel(model, population, data, seed=0))


SEQ_TASK = InductionTask(kind="induction", vocab=11, half=4, n_train=20, n_test=60)
SEQ_POP = Population(
    data=SEQ_TASK,
    model=TransformerSpec(kind="transformer", d_model=8, n_heads=10, d_head=2, d_mlp=10),
    seeds=2,
)


def _sequence_model() -> torch.nn.Module:
    torch.manual_seed(0)
    return build_model(SEQ_POP.model, (9,), SEQ_TASK.vocab).eval()


def _runs_on_sequences(slot: str, kind: Kind, model: torch.nn.Module) -> object:
    data = load_dataset(SEQ_TASK)
    x, y = data.x_test[:60], data.y_test[:60]
    if slot == "unit_measures":
        return kind.measure(model, "blocks.0.attn.hook_z", x, y, SEQ_TASK.vocab)
    return kind.compute(TrainedModel(model, SEQ_POP, data, seed=0))


KIND_RUNS = [
    (reg.slot, tag, cls)
    for reg in (UNIT_MEASURES, UNIT_EFFECTS, OUTCOMES)
    for tag, cls in reg.items()
    if tag not in ("corruption_accuracy",)  # image corruptions need image-shaped data
]


@pytest.mark.parametrize(
    ("slot", "tag", "cls"), KIND_RUNS, ids=[f"{s}:{t}" for s, t, _ in KIND_RUNS]
)
@pytest.mark.parametrize("fail", [False, True], ids=["normal", "forced-error"])
def test_every_kind_leaves_no_hook_and_unchanged_weights(
    slot: str, tag: str, cls: type[Kind], fail: bool, monkeypatch: pytest.MonkeyPatch
) -> None:
    kind = _instance(cls)
    sequences = bool(getattr(kind, "needs_sequences", False))
    model = _sequence_model() if sequences else planted_model(SPEC)[0]
    before = {k: v.clone() for k, v in model.state_dict().items()}
    if fail:
        calls = []

        def broken(*_args: object) -> torch.Tensor:
            calls.append(1)
            raise RuntimeError("forced error in the model")

        monkeypatch.setattr(model.unembed if sequences else model.head, "forward", broken)
        try:
            _runs(slot, kind, model)
        except RuntimeError as exc:
            assert "forced error" in str(exc)
        else:  # a kind that reads only the weights never runs the model
            assert not calls
    else:
        out = _runs(slot, kind, model)
        if slot != "outcomes":
            assert isinstance(out, torch.Tensor) and out.shape == (10,)
    assert _hooks(model) == 0
    for k, v in model.state_dict().items():
        assert torch.equal(v, before[k]), k


# --- every constrained field, given a bad value in a file, is one located line -----------------


def _hypothesis(outcome: dict[str, object], /, **test: object) -> str:
    doc = {
        "id": "contract",
        "claim": "A contract check.",
        "population": {
            "data": {"kind": "synthetic", "n_samples": 200},
            "model": {"kind": "mlp", "hidden": [10]},
            "seeds": 2,
            "conditions": {"training.label_noise": [0.0, 0.5]},
        },
        "test": test
        or {
            "kind": "between_conditions",
            "outcome": outcome,
            "compare": {"kind": "reference", "reference": {"training.label_noise": 0.0}},
        },
        "prediction": {"direction": "positive", "sesoi": 0.1},
    }
    return yaml.safe_dump(doc, sort_keys=False)


def _bad_values(cls: type[Kind]) -> list[tuple[str, object]]:
    """(field, a value its constraint refuses) for every field with a bound or a literal."""
    out: list[tuple[str, object]] = []
    for name, field in cls.model_fields.items():
        if name == "kind":
            continue
        for meta in field.metadata:
            if isinstance(meta, annotated_types.Ge | annotated_types.Gt):
                out.append((name, meta.ge - 1 if hasattr(meta, "ge") else meta.gt))
            elif isinstance(meta, annotated_types.Le | annotated_types.Lt):
                out.append((name, meta.le + 1 if hasattr(meta, "le") else meta.lt))
        if typing.get_origin(field.annotation) is typing.Literal:
            out.append((name, "no-such-choice"))
    return out


def _placed(slot: str, cls: type[Kind], body: dict[str, object]) -> tuple[str, str]:
    """The file text with the kind at its place, and the dotted name of that place."""
    if slot == "outcomes":
        return _hypothesis(body), "test.outcome"
    if slot == "shapes":
        return _hypothesis({}, **body), "test"
    if slot == "unit_measures":
        return _hypothesis(
            {}, kind="association", layers=["hidden1"], x=body, y={"kind": "unit_ablation"}
        ), "test.x"
    if slot == "unit_effects":
        return _hypothesis(
            {}, kind="association", layers=["hidden1"], x={"kind": "class_selectivity"}, y=body
        ), "test.y"
    doc = yaml.safe_load(_hypothesis({"kind": "accuracy"}))
    if slot == "regularizers":  # a block of training, named by its key, not by ``kind``
        doc["population"]["training"] = {cls.tag(): {k: v for k, v in body.items() if k != "kind"}}
        return yaml.safe_dump(doc, sort_keys=False), f"population.training.{cls.tag()}"
    where = "data" if slot == "datasets" else "model"
    doc["population"][where] = body
    return yaml.safe_dump(doc, sort_keys=False), f"population.{where}"


CONSTRAINED = [
    (slot, tag, cls, name, bad)
    for slot, tag, cls in ALL
    if slot != "contrasts" and not cls.import_path_key
    for name, bad in _bad_values(cls)
]


@pytest.mark.parametrize(
    ("slot", "tag", "cls", "name", "bad"),
    CONSTRAINED,
    ids=[f"{t}.{n}" for _, t, _, n, _ in CONSTRAINED],
)
def test_every_constrained_field_gives_one_located_line(
    slot: str, tag: str, cls: type[Kind], name: str, bad: object, tmp_path: Path
) -> None:
    body = {"kind": tag, **cls.example, name: bad}
    text, place = _placed(slot, cls, body)
    path = tmp_path / "contract.yaml"
    path.write_text(text)
    with pytest.raises(HypothesisError) as info:
        loader.load(path)
    message = str(info.value)
    assert "\n" not in message, message
    assert f"'{place}.{name}" in message and str(path) in message and "(line " in message, message


@pytest.mark.parametrize("name", sorted(DRAWERS))
def test_every_drawer_exists(name: str) -> None:
    import importlib

    module, _, function = DRAWERS[name].partition(":")
    assert callable(getattr(importlib.import_module(module), function))


# --- every shape runs on real models normally and with a forced error ------------------------


def _replicates(cls: type[Kind]) -> tuple[object, object, list[object]]:
    """A file for the shape's example, its data, and 2 replicates per condition: the planted
    model with a little seeded noise on its weights, so replicates differ."""
    from falsify.hypothesis.conditions import expand
    from falsify.runner.replicates import Replicate

    text = _hypothesis({}, kind=cls.tag(), **cls.example)
    doc = yaml.safe_load(text)
    if not cls.compares_conditions:
        del doc["population"]["conditions"]
    doc["population"]["model"] = {"kind": "mlp", "hidden": [10]}
    hf = loader.loads(yaml.safe_dump(doc, sort_keys=False), "contract.yaml")
    data = load_dataset(hf.hypothesis.population.data)
    reps = []
    for condition in expand(hf.hypothesis.population):
        for seed in (0, 1):
            model, _ = planted_model(SPEC)
            g = torch.Generator().manual_seed(10 * condition.index + seed)
            with torch.no_grad():
                for p in model.parameters():
                    p.add_(0.05 * torch.randn(p.shape, generator=g))
            reps.append(Replicate(seed, model, "", False, 0.9, 0.1, condition.name))
    return hf, data, reps


@pytest.mark.parametrize(("tag", "cls"), SHAPES.items(), ids=list(SHAPES))
@pytest.mark.parametrize("fail", [False, True], ids=["normal", "forced-error"])
def test_every_shape_leaves_no_hook_and_unchanged_weights(
    tag: str, cls: type[Kind], fail: bool, monkeypatch: pytest.MonkeyPatch
) -> None:
    from falsify.shapes.base import run_shape

    hf, data, reps = _replicates(cls)
    before = [{k: v.clone() for k, v in r.model.state_dict().items()} for r in reps]
    if fail:

        def broken(*_args: object) -> torch.Tensor:
            raise RuntimeError("forced error in the model")

        for r in reps:
            monkeypatch.setattr(r.model.head, "forward", broken)
        with pytest.raises(RuntimeError, match="forced error"):
            run_shape(hf, data, reps)
    else:
        evidence, parts, _ = run_shape(hf, data, reps)
        assert len(parts) == len(evidence.parts) >= 1
        assert set(evidence.figures) and all(f.draw in DRAWERS for f in evidence.figures.values())
    for r, state in zip(reps, before, strict=True):
        assert _hooks(r.model) == 0
        for k, v in r.model.state_dict().items():
            assert torch.equal(v, state[k]), k


ENSEMBLE_TERMS = [(tag, cls) for tag, cls in REGISTRIES["regularizers"].items() if cls.ensemble]


@pytest.mark.parametrize(("tag", "cls"), ENSEMBLE_TERMS, ids=[t for t, _ in ENSEMBLE_TERMS])
def test_every_regularizer_declaring_ensemble_trains_as_one_bit_for_bit(
    tag: str, cls: type[Kind]
) -> None:
    # `ensemble` promises a term that reads layer outputs and labels only (docs/extending.md),
    # so the stacked trainer must reproduce sequential training with it on.
    training = TrainingSpec(epochs=2, lr=0.01, **{tag: dict(cls.example)})
    pop = Population(
        data=SPEC, model=MLPSpec(kind="mlp", hidden=(16, 8)), training=training, seeds=2
    )
    assert next(r for r in training.regularizers() if r.tag() == tag).trains
    assert supports_ensemble(pop)
    assert_equals_sequential(pop, load_dataset(SPEC))
