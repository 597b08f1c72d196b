from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest

from falsify.cli.main import main

_ROOT = Path(__file__).parents[1]  # run subprocesses here, so they import this checkout


def _run(*args: str) -> int:
    return main(list(args))


@pytest.fixture
def dirs(tmp_path: Path) -> tuple[Path, Path]:
    return tmp_path / "reports", tmp_path / "cache"


def test_run_end_to_end_then_cached(write, tiny_yaml, dirs, capsys) -> None:
    out, cache = dirs
    path = write(tiny_yaml)
    assert _run("run", str(path), "--out", str(out), "--cache", str(cache), "--quiet") == 0
    first = capsys.readouterr().out
    assert "tiny:" in first and "(0 cached)" in first
    report = (out / "tiny.md").read_text()
    verdict = json.loads((out / "tiny.json").read_text())["verdict"]
    assert report.startswith(f"# tiny: {verdict}")
    for section in ("## Decision rule", "## Result", "## Per replicate", "## Provenance"):
        assert section in report
    assert (out / "tiny.png").stat().st_size > 1000
    tidy = pd.read_csv(out / "tiny.csv")
    assert list(tidy.columns) == ["seed", "layer", "unit", "x", "y"]
    assert len(tidy) == 3 * 16 and set(tidy["seed"]) == {0, 1, 2}
    assert "[tiny](tiny.md)" in (out / "index.md").read_text()

    estimate = json.loads((out / "tiny.json").read_text())["parts"][0]["estimate"]
    assert _run("run", str(path), "--out", str(out), "--cache", str(cache), "--quiet") == 0
    assert "(3 cached)" in capsys.readouterr().out
    # Same file, same seeds: the same numbers.
    assert json.loads((out / "tiny.json").read_text())["parts"][0]["estimate"] == estimate
    assert pd.read_csv(out / "tiny.csv").equals(tidy)


def test_seeds_override_reuses_cache_and_is_marked(write, tiny_yaml, dirs, capsys) -> None:
    out, cache = dirs
    path = write(tiny_yaml)
    assert _run("run", str(path), "--out", str(out), "--cache", str(cache), "--quiet") == 0
    capsys.readouterr()
    assert (
        _run("run", str(path), "--seeds", "4", "--out", str(out), "--cache", str(cache), "--quiet")
        == 0
    )
    assert "4 replicates (3 cached)" in capsys.readouterr().out
    assert "population.seeds=4" in (out / "tiny.md").read_text()
    assert "(overridden)" in (out / "index.md").read_text()


def test_failed_run_keeps_the_earlier_report(write, tiny_yaml, dirs, capsys) -> None:
    out, cache = dirs
    path = write(tiny_yaml)
    assert _run("run", str(path), "--out", str(out), "--cache", str(cache), "--quiet") == 0
    before = {p.name: p.read_bytes() for p in out.iterdir()}
    path.write_text(tiny_yaml.replace("layers: [hidden1]", "layers: [hidden3]"))
    assert _run("run", str(path), "--out", str(out), "--cache", str(cache), "--quiet") == 1
    err = capsys.readouterr().err
    assert "'test.layers[0]'" in err and "(line 10)" in err and "['flatten', 'hidden1'" in err
    assert {p.name: p.read_bytes() for p in out.iterdir()} == before


def test_check_and_list(write, tiny_yaml, dirs, capsys) -> None:
    _, cache = dirs
    path = write(tiny_yaml)
    assert _run("check", str(path), "--cache", str(cache)) == 0
    assert "3 replicates, 0 cached, 3 to train" in capsys.readouterr().out
    assert _run("list", str(path.parent)) == 0
    assert capsys.readouterr().out.startswith("tiny\tassociation\tSelective units")


def test_one_bad_file_does_not_stop_the_others(write, tiny_yaml, dirs, capsys) -> None:
    out, cache = dirs
    write(tiny_yaml, "good.yaml")
    write(tiny_yaml.replace("id: tiny", "id: bad").replace("seeds: 3", "seeds: 1"), "bad.yaml")
    assert _run("run", str(out.parent), "--out", str(out), "--cache", str(cache), "--quiet") == 1
    captured = capsys.readouterr()
    assert "bad.yaml" in captured.err and "at least 2 seeds" in captured.err
    assert (out / "tiny.md").exists() and not (out / "bad.md").exists()


def test_sesoi_must_fit_a_correlation(write, tiny_yaml, dirs, capsys) -> None:
    _, cache = dirs
    path = write(tiny_yaml.replace("sesoi: 0.1", "sesoi: 1.5"))
    assert _run("check", str(path), "--cache", str(cache)) == 1
    assert "'prediction.sesoi'" in capsys.readouterr().err


@pytest.mark.parametrize(
    "edit,needle",
    [
        (lambda t: "id: [x\n", "not valid YAML"),
        (lambda t: t + "extra: 1\n", "is not a known field"),
        (lambda t: t.replace("epochs: 3", "epochs: -1"), "greater than or equal to 1"),
        (lambda t: t.replace("layers: [hidden1]", "layers: [hiden1]"), "Did you mean 'hidden1'"),
        (
            lambda t: t.replace("kind: digits", "kind: mnist2"),
            "must be one of ['cifar10', 'digits'",
        ),
        (lambda t: t.replace("seeds: 3", "seeds: 1"), "at least 2 seeds"),
    ],
)
def test_bad_input_is_one_line_without_traceback(write, tiny_yaml, tmp_path, edit, needle) -> None:
    path = write(edit(tiny_yaml))
    proc = subprocess.run(
        [sys.executable, "-m", "falsify", "check", str(path), "--cache", str(tmp_path / "c")],
        capture_output=True,
        text=True,
        cwd=Path(__file__).parents[1],
    )
    assert proc.returncode != 0
    assert needle in proc.stderr
    assert "Traceback" not in proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1
    assert str(path) in proc.stderr


def test_empty_folder_is_an_error(tmp_path, capsys) -> None:
    assert _run("check", str(tmp_path)) != 0
    assert "no hypothesis files" in capsys.readouterr().err


def test_list_is_a_light_read(write, tiny_yaml) -> None:
    """`list` reads three fields of the YAML: no torch, pandas or plotting library is loaded."""
    path = write(tiny_yaml)
    code = (
        "import sys\n"
        "from falsify.cli.main import main\n"
        f"assert main(['list', {str(path)!r}]) == 0\n"
        "heavy = ('torch', 'pandas', 'statsmodels', 'matplotlib', 'captum', 'scipy')\n"
        "print(sorted(m for m in heavy if m in sys.modules))\n"
    )
    proc = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=_ROOT
    )
    assert proc.stdout.splitlines() == [
        "tiny\tassociation\tSelective units matter more (a fast test population).",
        "[]",
    ]


def test_a_reader_that_leaves_early_is_not_an_internal_error(write, tiny_yaml) -> None:
    """`falsify list … | head -1`: the closed pipe ends the command quietly (status 141)."""
    path = write(tiny_yaml)
    code = (
        "import os, sys\n"
        "from falsify.cli.main import main\n"
        "r, w = os.pipe()\n"
        "os.close(r)\n"  # the reader is gone before anything is written
        "sys.stdout = os.fdopen(w, 'w')\n"
        f"sys.exit(main(['list', {str(path)!r}]))\n"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=_ROOT)
    assert (proc.returncode, proc.stderr) == (141, "")


_CLAIM = "claim: Selective units matter more (a fast test population).\n"


@pytest.mark.parametrize(
    "edit",
    [
        lambda t: t.replace("id: tiny\n", ""),
        lambda t: "# a comment\n\n" + t.replace("id: tiny\n", ""),
        lambda t: t.replace("id: tiny", "id: [1, 2]"),
        lambda t: t.replace(_CLAIM, ""),
        lambda t: t.replace("test:\n", "tst:\n"),
        lambda t: "id: [x\n",
        lambda t: "- a list\n",
        lambda t: "",
    ],
)
def test_list_reports_a_file_it_cannot_read_as_check_does(write, tiny_yaml, edit, capsys) -> None:
    from falsify.errors import HypothesisError
    from falsify.hypothesis.loader import load

    good = write(tiny_yaml.replace("id: tiny", "id: good"), "good.yaml")
    bad = write(edit(tiny_yaml), "bad.yaml")
    with pytest.raises(HypothesisError) as full:
        load(bad)
    assert _run("list", str(bad), str(good)) == 1
    captured = capsys.readouterr()
    assert captured.out.startswith("good\tassociation\t")
    # one line, and one of the lines `check` prints for the file
    assert captured.err.endswith("\n") and captured.err.count("\n") == 1
    assert captured.err.removeprefix("error: ").strip() in str(full.value).splitlines()


def test_list_needs_the_test_kind(write, tiny_yaml, capsys) -> None:
    bad = write(tiny_yaml.replace("  kind: association\n", ""))
    assert _run("list", str(bad)) == 1
    assert capsys.readouterr().err == (
        f"error: The 'test.kind' of {bad} (line 9) is required but missing.\n"
    )


def test_list_refuses_duplicate_ids(write, tiny_yaml, capsys) -> None:
    a = write(tiny_yaml, "a.yaml")
    write(tiny_yaml, "b.yaml")
    assert _run("list", str(a.parent)) == 1
    captured = capsys.readouterr()
    assert captured.out == ""
    assert "The 'id' of" in captured.err and "must be unique" in captured.err


@pytest.mark.parametrize("args", [["--help"], ["run", "--help"], ["list", "--help"]])
def test_help_loads_no_heavy_library(args) -> None:
    code = (
        "import sys\n"
        "from falsify.cli.main import main\n"
        "try:\n"
        f"    main({args!r})\n"
        "except SystemExit:\n"
        "    pass\n"
        "heavy = ('torch', 'pandas', 'statsmodels', 'matplotlib', 'captum', 'scipy')\n"
        "print(sorted(m for m in heavy if m in sys.modules), file=sys.stderr)\n"
    )
    proc = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=_ROOT
    )
    assert "usage: falsify" in proc.stdout
    assert proc.stderr == "[]\n"
