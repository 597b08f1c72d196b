"""The JSON Schema of hypothesis files (docs/editors.md): shipped, valid for every bundled
file, and agreeing with the loader on mutated files except for the documented gaps."""

from __future__ import annotations

import copy
import subprocess
import sys
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

import jsonschema
import pytest
import yaml

from falsify.errors import FalsifyDeprecationWarning, HypothesisError
from falsify.hypothesis.file_schema import SHIPPED, json_schema
from falsify.hypothesis.loader import loads

ROOT = Path(__file__).parents[1]
BUNDLED = sorted((ROOT / "hypotheses").glob("*.yaml"))
COMMENT = "# yaml-language-server: $schema=../falsify/hypothesis/hypothesis.schema.json"


@pytest.fixture(scope="module")
def validator() -> jsonschema.Draft202012Validator:
    schema = json_schema()
    jsonschema.Draft202012Validator.check_schema(schema)
    return jsonschema.Draft202012Validator(schema)


def test_the_shipped_copy_is_what_the_models_generate() -> None:
    # A fresh process: only falsify's own kinds (and installed plugins) are registered, not the
    # kinds other tests register in this one.
    done = subprocess.run(
        [sys.executable, "-m", "falsify", "schema"], capture_output=True, text=True, check=True
    )
    assert done.stdout == SHIPPED.read_text(), "regenerate: falsify schema > " + str(SHIPPED)


@pytest.mark.parametrize("path", BUNDLED, ids=lambda p: p.stem)
def test_every_bundled_file_names_and_passes_the_schema(path: Path, validator) -> None:
    text = path.read_text()
    assert text.splitlines()[0] == COMMENT
    assert (path.parent / COMMENT.split("=", 1)[1]).resolve() == SHIPPED.resolve()
    errors = [e.message for e in validator.iter_errors(yaml.safe_load(text))]
    assert errors == []


def _loader_accepts(raw: dict[str, Any]) -> bool:
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", FalsifyDeprecationWarning)
            loads(yaml.safe_dump(raw, sort_keys=False), "mutated.yaml")
    except HypothesisError:
        return False
    return True


def _set(keys: str, value: object) -> Callable[[dict[str, Any]], None]:
    def mutate(raw: dict[str, Any]) -> None:
        *parents, last = keys.split(".")
        node = raw
        for k in parents:
            node = node.setdefault(k, {})
        node[last] = value

    return mutate


def _drop(keys: str) -> Callable[[dict[str, Any]], None]:
    def mutate(raw: dict[str, Any]) -> None:
        *parents, last = keys.split(".")
        node = raw
        for k in parents:
            node = node[k]
        del node[last]

    return mutate


ASSOCIATION = ROOT / "hypotheses" / "selectivity_predicts_importance.yaml"
BETWEEN = ROOT / "hypotheses" / "increasing_selectivity_hurts.yaml"

# (file, mutation); the loader and the schema must agree on each, accept or reject.
MUTATIONS: dict[str, tuple[Path, Callable[[dict[str, Any]], None]]] = {
    "typo_alpah": (ASSOCIATION, _set("prediction.alpah", 0.05)),
    "unknown_top_key": (ASSOCIATION, _set("notes", "x")),
    "no_prediction": (ASSOCIATION, _drop("prediction")),
    "no_claim": (ASSOCIATION, _drop("claim")),
    "empty_claim": (ASSOCIATION, _set("claim", "")),
    "bad_id": (ASSOCIATION, _set("id", "has space")),
    "direction_up": (ASSOCIATION, _set("prediction.direction", "up")),
    "negative_sesoi": (ASSOCIATION, _set("prediction.sesoi", -0.1)),
    "alpha_too_big": (ASSOCIATION, _set("prediction.alpha", 0.7)),
    "adjust_unknown": (ASSOCIATION, _set("prediction.adjust", "fdr")),
    "one_seed": (ASSOCIATION, _set("population.seeds", 1)),
    "one_seed_list": (ASSOCIATION, _set("population.seeds", [3])),
    "repeated_seeds": (ASSOCIATION, _set("population.seeds", [1, 1])),
    "bool_seeds": (ASSOCIATION, _set("population.seeds", True)),
    "unknown_test_kind": (ASSOCIATION, _set("test.kind", "correlation")),
    "unknown_data_kind": (ASSOCIATION, _set("population.data.kind", "digitz")),
    "data_typo": (ASSOCIATION, _set("population.data.test_fractoin", 0.2)),
    "hidden_not_list": (ASSOCIATION, _set("population.model.hidden", "64")),
    "zero_epochs": (ASSOCIATION, _set("population.training.epochs", 0)),
    "optimizer_unknown": (ASSOCIATION, _set("population.training.optimizer", "rmsprop")),
    "momentum_one": (ASSOCIATION, _set("population.training.momentum", 1.0)),
    "label_noise_2": (ASSOCIATION, _set("population.training.label_noise", 2)),
    "measure_unknown": (ASSOCIATION, _set("test.x.kind", "selectivity")),
    "test_typo": (ASSOCIATION, _set("test.layer", ["hidden1"])),
    "repeated_layers": (ASSOCIATION, _set("test.layers", ["hidden1", "hidden1"])),
    "regularizer_typo": (BETWEEN, _set("population.training.selectivity", {"alfa": 1})),
    "empty_condition": (BETWEEN, _set("population.conditions", {"training.lr": []})),
    # accepted by both
    "seeds_list": (ASSOCIATION, _set("population.seeds", [4, 7, 9])),
    "seeds_count": (ASSOCIATION, _set("population.seeds", 3)),
    "no_source": (ASSOCIATION, _drop("source")),
    "no_training": (ASSOCIATION, _drop("population.training")),
    "sgd": (ASSOCIATION, _set("population.training.optimizer", "sgd")),
    "direction_none": (ASSOCIATION, _set("prediction.direction", "none")),
    "regularizer_block": (BETWEEN, _set("population.training.selectivity", {"alpha": 1})),
}

# Where they disagree on purpose (docs/editors.md, "What the schema cannot say"): the loader
# accepts or rejects, the schema says the opposite. Checked here so the list stays true.
GAPS: dict[str, tuple[Path, Callable[[dict[str, Any]], None], bool]] = {
    # a cross-field rule: a grid key must name a field of the recipe (falsify.hypothesis.
    # conditions), which depends on the rest of the file
    "grid_key_not_a_field": (
        BETWEEN,
        _set("population.conditions", {"training.not_a_field": [1, 2]}),
        False,
    ),
    # deprecated spellings are read with a note; the schema offers only the current names
    "deprecated_flat_name": (BETWEEN, _set("population.training.selectivity_alpha", 1), True),
    # pydantic's lax mode reads the string "5" as the integer 5; the schema asks for a number
    "string_number": (ASSOCIATION, _set("population.training.epochs", "5"), True),
    # the grid's nested spelling is flattened by a validator; the schema shows the dotted one
    "nested_grid": (
        BETWEEN,
        _set("population.conditions", {"training": {"lr": [0.001, 0.01]}}),
        True,
    ),
}


def _mutated(path: Path, mutate: Callable[[dict[str, Any]], None]) -> dict[str, Any]:
    raw = copy.deepcopy(yaml.safe_load(path.read_text()))
    mutate(raw)
    return raw


@pytest.mark.parametrize("name", MUTATIONS)
def test_schema_and_loader_agree(name: str, validator) -> None:
    raw = _mutated(*MUTATIONS[name])
    schema_ok = validator.is_valid(raw)
    assert schema_ok == _loader_accepts(raw), f"schema accepts: {schema_ok}"


def test_mutations_include_both_outcomes(validator) -> None:
    outcomes = [validator.is_valid(_mutated(*m)) for m in MUTATIONS.values()]
    assert outcomes.count(True) >= 5 and outcomes.count(False) >= 20


@pytest.mark.parametrize("name", GAPS)
def test_documented_gaps(name: str, validator) -> None:
    path, mutate, loader_ok = GAPS[name]
    raw = _mutated(path, mutate)
    assert _loader_accepts(raw) is loader_ok
    assert validator.is_valid(raw) is not loader_ok
