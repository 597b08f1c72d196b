"""``falsify kinds --fields`` / ``falsify kinds SLOT`` and ``falsify new SHAPE``: read from the
registries, so every registered kind is described and every shape gets a starter that passes
``falsify check`` (docs/file-format.md)."""

from __future__ import annotations

from pathlib import Path

import jsonschema
import pytest
import yaml

from falsify.cli.main import main
from falsify.cli.starter import starter_text
from falsify.hypothesis.file_schema import json_schema
from falsify.hypothesis.kinds import REGISTRIES, SHAPES


@pytest.mark.parametrize("tag", list(SHAPES))
def test_every_shape_has_a_starter_that_passes_check(tag: str, tmp_path: Path, capsys) -> None:
    path = tmp_path / "starter.yaml"
    assert main(["new", tag, str(path)]) == 0
    text = path.read_text()
    assert text == starter_text(tag) and text.count("\n#") >= 5  # commented
    assert main(["check", str(path), "--cache", str(tmp_path / "cache")]) == 0
    assert f"({tag}); " in capsys.readouterr().out
    jsonschema.validate(yaml.safe_load(text), json_schema())
    assert main(["new", tag, str(path)]) == 2  # never overwrites
    assert "exists already" in capsys.readouterr().err


def test_an_unknown_shape_lists_the_shapes(capsys) -> None:
    assert main(["new", "asociation"]) == 2
    err = capsys.readouterr().err
    assert "Did you mean 'association'?" in err and str(list(SHAPES)) in err


def test_kinds_fields_describes_every_kind_with_its_fields(capsys) -> None:
    assert main(["kinds", "--fields"]) == 0
    out = capsys.readouterr().out
    for slot, registry in REGISTRIES.items():
        assert f"{slot}:\n" in out
        for tag, cls in registry.items():
            head = (
                f"{cls.import_path_key}: MODULE:FUNCTION" if cls.import_path_key else f"kind: {tag}"
            )
            block = out.split(f"  {head}  ", 1)[1].split("\n  kind: ", 1)[0]
            assert cls.label in block and cls.__module__ in block
            for name in cls.model_fields:
                if name != "kind":
                    assert f"\n      {name}: " in block, (tag, name)


def test_kinds_slot_shows_its_defaults_and_refuses_a_typo(capsys) -> None:
    assert main(["kinds", "shapes"]) == 0
    out = capsys.readouterr().out
    assert out.startswith("shapes:\n") and "datasets:" not in out
    assert "correlation: 'spearman' | 'pearson' | 'kendall' = 'spearman'" in out
    assert "layers: list of str required" in out
    assert main(["kinds", "shapez"]) == 2
    assert "Did you mean 'shapes'?" in capsys.readouterr().err
