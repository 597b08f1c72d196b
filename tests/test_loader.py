from __future__ import annotations

import pytest

from falsify.errors import HypothesisError
from falsify.hypothesis import discover, load


def test_valid_file_loads_frozen(write, tiny_yaml) -> None:
    hf = load(write(tiny_yaml))
    assert hf.hypothesis.population.seeds == (0, 1, 2)
    with pytest.raises(Exception):  # noqa: B017 - pydantic's frozen-instance error
        hf.hypothesis.prediction.sesoi = 0.5  # type: ignore[misc]


def test_typo_names_file_line_field_and_suggestion(write, tiny_yaml) -> None:
    path = write(tiny_yaml.replace("  sesoi: 0.1", "  sesoi: 0.1\n  alpah: 0.05"))
    with pytest.raises(HypothesisError) as exc:
        load(path)
    msg = str(exc.value)
    assert str(path) in msg
    assert "(line 16)" in msg
    assert "'prediction.alpah'" in msg
    assert "Did you mean 'alpha'?" in msg


def test_wrong_type_names_field_and_value(write, tiny_yaml) -> None:
    path = write(tiny_yaml.replace("epochs: 3", "epochs: many"))
    with pytest.raises(HypothesisError) as exc:
        load(path)
    msg = str(exc.value)
    assert "'population.training.epochs'" in msg and "(line 6)" in msg
    assert "a valid integer" in msg and "'many'" in msg


def test_unknown_dataset_lists_the_known_ones(write, tiny_yaml) -> None:
    path = write(tiny_yaml.replace("kind: digits", "kind: digitz"))
    with pytest.raises(HypothesisError) as exc:
        load(path)
    msg = str(exc.value)
    assert "'population.data.kind'" in msg and "(line 4)" in msg
    known = "['cifar10', 'digits', 'generated_images', 'induction', 'mnist', 'modular_addition', "
    known += "'previous_token', "
    assert f"one of {known}'synthetic'" in msg and "Did you mean 'digits'?" in msg


@pytest.mark.parametrize("seeds", ["1", "[3]", "[1, 1]"])
def test_too_few_or_repeated_seeds(write, tiny_yaml, seeds) -> None:
    path = write(tiny_yaml.replace("seeds: 3", f"seeds: {seeds}"))
    with pytest.raises(HypothesisError, match=r"'population.seeds'.*\(line 7\)"):
        load(path)


def test_missing_field(write, tiny_yaml) -> None:
    path = write(tiny_yaml.replace("  direction: positive\n", ""))
    with pytest.raises(HypothesisError, match=r"'prediction.direction'.*required"):
        load(path)


def test_bad_literal_suggests(write, tiny_yaml) -> None:
    path = write(tiny_yaml.replace("direction: positive", "direction: postive"))
    with pytest.raises(HypothesisError, match="Did you mean 'positive'"):
        load(path)


def test_malformed_yaml_gives_line(write) -> None:
    path = write("id: x\nclaim: [unclosed\n")
    with pytest.raises(HypothesisError, match=r"line \d+.*not valid YAML"):
        load(path)


def test_yaml_tags_are_not_executed(write) -> None:
    path = write("id: !!python/object/apply:os.system ['echo pwned']\n")
    with pytest.raises(HypothesisError, match="not valid YAML"):
        load(path)


def test_not_a_mapping(write) -> None:
    with pytest.raises(HypothesisError, match="must hold a YAML mapping"):
        load(write("- a\n- b\n"))


def test_empty_folder_and_missing_path(tmp_path) -> None:
    with pytest.raises(HypothesisError, match="no hypothesis files"):
        discover([tmp_path])
    with pytest.raises(HypothesisError, match="does not exist"):
        discover([tmp_path / "nope.yaml"])


def test_overrides_apply_before_validation(write, tiny_yaml) -> None:
    hf = load(write(tiny_yaml), ["population.seeds=5", "population.training.epochs=1"])
    assert hf.hypothesis.population.seeds == (0, 1, 2, 3, 4)
    assert hf.hypothesis.population.training.epochs == 1
    assert hf.overrides == ("population.seeds=5", "population.training.epochs=1")
    with pytest.raises(HypothesisError, match="KEY=VALUE"):
        load(write(tiny_yaml), ["population.seeds"])


def test_bundled_files_are_valid() -> None:
    for path in discover(["hypotheses"]):
        load(path)
