"""Hostile and careless hypothesis files (issue 13): each is refused by ``falsify check`` with
short lines naming the file (and the line or the field), never a traceback or a hang."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from falsify.cli.main import main
from falsify.hypothesis.loader import MAX_BYTES, MAX_DEPTH, MAX_ERROR_LINES

_BUNDLED = Path(__file__).parents[1] / "hypotheses"


def _check(path: Path, capsys: pytest.CaptureFixture[str], *extra: str) -> tuple[int, list[str]]:
    """Exit status and stderr lines of ``falsify check`` (in process) on ``path``."""
    rc = main(["check", str(path), "--cache", str(path.parent / "cache"), *extra])
    err = capsys.readouterr().err
    assert "Traceback" not in err and "internal error" not in err
    return rc, err.strip().splitlines()


def _one_line(path: Path, capsys: pytest.CaptureFixture[str], *extra: str) -> str:
    rc, lines = _check(path, capsys, *extra)
    assert rc != 0
    assert len(lines) == 1, lines
    assert str(path) in lines[0]
    return lines[0]


def _bomb(levels: int = 9, width: int = 9) -> str:
    """The "billion laughs": ``levels`` anchors, each a list of ``width`` aliases of the last."""
    rows = [f"a0: &a0 [{', '.join(['lol'] * width)}]"]
    rows += [f"a{i}: &a{i} [{', '.join([f'*a{i - 1}'] * width)}]" for i in range(1, levels)]
    return "\n".join(rows) + "\n"


# --- item 2: limits on what a file may hold --------------------------------------------------------


def test_alias_bomb_is_refused_quickly_in_one_short_line(write, tiny_yaml, capsys) -> None:
    # 9 nested anchors of 9 aliases each expand to 9**9 (387 million) values: before the limit,
    # check ran 73 s and died in a 2.8 GB allocation, or printed a 200 MB line.
    path = write(tiny_yaml + _bomb())
    start = time.perf_counter()
    line = _one_line(path, capsys)
    assert time.perf_counter() - start < 2.0
    assert "more than 100,000 values once its aliases are expanded" in line
    assert len(line) < 300


def test_a_small_anchor_and_its_aliases_still_work(write, tiny_yaml, capsys) -> None:
    text = tiny_yaml.replace("  layers: [hidden1]", "  layers: &l [hidden1]")
    text = text.replace("  y: {kind: unit_ablation", "  z: *l\n  y: {kind: unit_ablation")
    _, lines = _check(write(text), capsys)
    assert any("'test.z'" in line and "not a known field" in line for line in lines)


def test_an_alias_loop_is_refused(write, tiny_yaml, capsys) -> None:
    line = _one_line(write(tiny_yaml + "loop: &x [1, *x]\n"), capsys)
    assert (
        "(line 16, column 14)" in line and "an alias refers to the value that contains it" in line
    )


@pytest.mark.parametrize("through_aliases", [False, True])
def test_deep_nesting_is_refused(write, tiny_yaml, capsys, through_aliases) -> None:
    if through_aliases:  # each anchor nests the last one level deeper
        rows = ["d0: &d0 [1]"] + [f"d{i}: &d{i} [*d{i - 1}]" for i in range(1, MAX_DEPTH + 2)]
        deep = "\n".join(rows)
    else:
        deep = "deep: " + "[" * 10_000 + "]" * 10_000  # PyYAML's composer recurses per level
    line = _one_line(write(tiny_yaml + deep + "\n"), capsys)
    assert f"nest more than {MAX_DEPTH} levels deep" in line


def test_a_file_over_the_size_limit_is_not_parsed(write, tiny_yaml, capsys) -> None:
    path = write(tiny_yaml + "pad: '" + "x" * MAX_BYTES + "'\n")
    line = _one_line(path, capsys)
    assert "larger than 1024 KiB" in line


def test_quoted_values_are_truncated(write, tiny_yaml, capsys) -> None:
    path = write(tiny_yaml.replace("epochs: 3", "epochs: " + "k" * 300_000))
    line = _one_line(path, capsys)
    assert "'kkkk" in line and "…" in line
    assert len(line) < 600


def test_at_most_twenty_error_lines_per_file(write, tiny_yaml, capsys) -> None:
    seeds = ", ".join(f"'s{i}'" for i in range(200))
    path = write(tiny_yaml.replace("seeds: 3", f"seeds: [{seeds}]"))
    rc, lines = _check(path, capsys)
    assert rc != 0
    assert len(lines) == MAX_ERROR_LINES + 1
    assert lines[-1] == f"error: {path}: 180 more problems not shown."
    assert all(str(path) in line for line in lines)


def test_an_override_is_read_within_the_same_limits(write, tiny_yaml, capsys) -> None:
    path = write(tiny_yaml)
    bomb = "[" * (MAX_DEPTH + 5) + "]" * (MAX_DEPTH + 5)
    rc, lines = _check(path, capsys, "--set", f"test.layers={bomb}")
    assert rc != 0 and len(lines) == 1
    assert "override" in lines[0] and "nest more than" in lines[0]


# --- item 3: a key given twice -------------------------------------------------------------------


@pytest.mark.parametrize(
    "edit,where,lines",
    [
        # block style, nested: the case flipped the verdict (the last value won)
        (
            lambda t: t.replace("  sesoi: 0.1\n", "  sesoi: 0.1\n  sesoi: 0.9\n"),
            "'prediction'",
            (15, 16),
        ),
        # flow style, one level deeper
        (
            lambda t: t.replace("hidden: [16]}", "hidden: [16], hidden: [32]}"),
            "'population.model'",
            (5, 5),
        ),
        (lambda t: t + "id: other\n", "at the top level", (1, 16)),
        # inside a list of mappings
        (
            lambda t: t.replace("layers: [hidden1]", "layers: [{a: 1, a: 2}]"),
            "'test.layers[0]'",
            (10, 10),
        ),
    ],
)
def test_a_repeated_key_is_refused_naming_both_lines(
    write, tiny_yaml, capsys, edit, where, lines
) -> None:
    path = write(edit(tiny_yaml))
    line = _one_line(path, capsys)
    assert f"(lines {lines[0]} and {lines[1]})" in line
    assert "appears twice" in line and where in line


def test_a_merge_key_may_be_overridden(write, tiny_yaml, capsys) -> None:
    # YAML's merge (<<) gives defaults that a key written beside it overrides: not a repeat.
    text = tiny_yaml.replace(
        "  training: {epochs: 3, batch_size: 128, lr: 0.01}",
        "  training:\n    <<: {epochs: 3, batch_size: 128, lr: 0.5}\n    lr: 0.01",
    )
    rc, lines = _check(write(text), capsys)
    assert rc == 0, lines
    from falsify.hypothesis import load

    assert load(write(text)).hypothesis.population.training.lr == 0.01


# --- item 5: non-finite numbers ------------------------------------------------------------------


@pytest.mark.parametrize("value", [".inf", "-.inf", ".nan", ".NaN", "+.Inf"])
@pytest.mark.parametrize(
    "old,new,field",
    [
        ("lr: 0.01", "lr: {v}", "'population.training.lr'"),
        ("sesoi: 0.1", "sesoi: {v}", "'prediction.sesoi'"),
        (
            "  seeds: 3",
            "  seeds: 3\n  training: {{}}\n  conditions: {{training.lr: [0.01, {v}]}}",
            "training.lr",
        ),
    ],
)
def test_non_finite_numbers_are_refused_naming_the_field(
    write, tiny_yaml, capsys, value, old, new, field
) -> None:
    text = tiny_yaml.replace(old, new.format(v=value))
    if "conditions" in new:  # a grid: the file's own training block goes
        text = text.replace("  training: {epochs: 3, batch_size: 128, lr: 0.01}\n", "")
    _, lines = _check(write(text), capsys)
    assert lines and all("finite number" in line for line in lines), lines
    assert field in lines[0]


# --- item 8: errors that lacked the file or the line ---------------------------------------------


@pytest.mark.parametrize("fraction", ["0.001", "0.9999"])
def test_a_test_fraction_too_small_or_large_to_stratify(write, tiny_yaml, capsys, fraction) -> None:
    path = write(
        tiny_yaml.replace("{kind: digits}", f"{{kind: digits, test_fraction: {fraction}}}")
    )
    line = _one_line(path, capsys)
    assert "'population.data.test_fraction'" in line and "(line 4)" in line
    assert "each of the 10 classes" in line and f"Got {fraction} instead" in line


def test_synthetic_data_needs_two_examples_of_each_class(write, tiny_yaml, capsys) -> None:
    text = tiny_yaml.replace(
        "{kind: digits}", "{kind: synthetic, n_samples: 20, n_classes: 15, n_features: 15}"
    )
    line = _one_line(write(text), capsys)
    assert (
        "'population.data'" in line
        and "(line 4)" in line
        and "n_samples at least 2 × n_classes (30)" in line
    )


def test_a_cnn_on_data_that_is_not_images(write, tiny_yaml, capsys) -> None:
    text = tiny_yaml.replace("{kind: digits}", "{kind: synthetic}")
    line = _one_line(write(text.replace("{kind: mlp, hidden: [16]}", "{kind: cnn}")), capsys)
    assert "'population.model.kind'" in line and "(line 5)" in line
    assert "a cnn needs images" in line and "[16]" in line


# --- item 10a: seeds -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    "old,new,field",
    [
        ("seeds: 3", "seeds: [0, -1, 2]", "'population.seeds[1]'"),
        ("seeds: 3", f"seeds: [0, {2**32}]", "'population.seeds[1]'"),
        ("{kind: digits}", "{kind: digits, split_seed: -1}", "'population.data.split_seed'"),
        ("{kind: digits}", "{kind: synthetic, split_seed: -5}", "'population.data.split_seed'"),
        ("", "", "'test.control_seed'"),  # a bundled targeted test, with --set
    ],
)
def test_a_seed_out_of_range_is_a_field_error(write, tiny_yaml, capsys, old, new, field) -> None:
    if old:
        _, lines = _check(write(tiny_yaml.replace(old, new)), capsys)
    else:
        path = write((_BUNDLED / "attribution_predicts_importance.yaml").read_text())
        _, lines = _check(path, capsys, "--set", "test.control_seed=-1")
    assert lines and field in lines[0]
    assert "greater than or equal to 0" in lines[0] or "less than 4294967296" in lines[0]


@pytest.mark.parametrize(
    "seeds", ["1000000000000", "10001", "[" + ", ".join(map(str, range(10_001))) + "]"]
)
def test_an_absurd_number_of_seeds_is_a_field_error(write, tiny_yaml, capsys, seeds) -> None:
    start = time.perf_counter()
    line = _one_line(write(tiny_yaml.replace("seeds: 3", f"seeds: {seeds}")), capsys)
    assert time.perf_counter() - start < 5.0  # no tuple of a trillion seeds is built
    assert "'population.seeds'" in line and "at most 10,000 seeds" in line
