"""Two files with one id fail, each with its own line; the other files of the folder go on."""

from __future__ import annotations

import json

import pytest

from falsify.cli.main import main


@pytest.fixture
def folder(write, tiny_yaml):
    a = write(tiny_yaml.replace("id: tiny", "id: twin"), "a.yaml")
    b = write(tiny_yaml.replace("id: tiny", "id: twin"), "b.yaml")
    write(tiny_yaml, "good.yaml")
    return a, b


def _clash_lines(err: str, a, b) -> None:
    lines = [line for line in err.splitlines() if "must be unique" in line]
    assert len(lines) == 2
    assert f"The 'id' of {a} must be unique" in lines[0] and f"{b} uses too" in lines[0]
    assert f"The 'id' of {b} must be unique" in lines[1] and f"{a} uses too" in lines[1]


def test_check_and_run_go_on_without_the_twins(folder, tmp_path, capsys) -> None:
    a, b = folder
    cache, out = str(tmp_path / "cache"), tmp_path / "reports"
    assert main(["check", str(a.parent), "--cache", cache]) == 1
    captured = capsys.readouterr()
    _clash_lines(captured.err, a, b)
    assert "good.yaml: tiny (association)" in captured.out and "twin" not in captured.out
    assert main(["run", str(a.parent), "--cache", cache, "--out", str(out), "--quiet"]) == 1
    _clash_lines(capsys.readouterr().err, a, b)
    assert (out / "tiny.md").exists() and not (out / "twin.md").exists()


def test_lock_records_the_others(folder, tmp_path, capsys) -> None:
    a, b = folder
    lock = tmp_path / "falsify.lock"
    assert main(["lock", str(a.parent), "--lock", str(lock), "--out", str(tmp_path / "r")]) == 1
    _clash_lines(capsys.readouterr().err, a, b)
    assert set(json.loads(lock.read_text())["hypotheses"]) == {"tiny"}
