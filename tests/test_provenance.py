"""Provenance people can cite: the falsify version and the git commit of the hypothesis file's
working tree in every report (falsify.runner.provenance), and CITATION.cff."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest
import yaml

import falsify
from falsify._version import __version__
from falsify.runner import provenance
from falsify.runner.provenance import git_state

ROOT = Path(__file__).parents[1]


def _git(repo: Path, *args: str) -> str:
    return subprocess.run(
        ["git", "-C", str(repo), *args], capture_output=True, text=True, check=True
    ).stdout.strip()


@pytest.fixture
def repo(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, tiny_yaml: str) -> Path:
    """A git repository holding one committed hypothesis file (nothing above tmp_path counts)."""
    monkeypatch.setenv("GIT_CEILING_DIRECTORIES", str(tmp_path))
    root = tmp_path / "project"
    (root / "hypotheses").mkdir(parents=True)
    (root / "hypotheses" / "tiny.yaml").write_text(tiny_yaml)
    _git(root, "init", "-q")
    _git(root, "add", "-A")
    _git(root, "-c", "user.name=t", "-c", "user.email=t@t", "commit", "-qm", "claim")
    return root


def test_a_committed_file(repo: Path) -> None:
    state = git_state(repo / "hypotheses" / "tiny.yaml")
    assert state == {"commit": _git(repo, "rev-parse", "HEAD"), "dirty": False, "file": "committed"}


def test_a_modified_file_and_an_untracked_one(repo: Path, tiny_yaml: str) -> None:
    new = repo / "hypotheses" / "new.yaml"
    new.write_text(tiny_yaml)
    assert git_state(new) == {**git_state(repo / "hypotheses" / "tiny.yaml"), "file": "untracked"}
    assert git_state(new)["dirty"] is False  # untracked files leave the tree clean
    (repo / "hypotheses" / "tiny.yaml").write_text(tiny_yaml + "# edited\n")
    state = git_state(repo / "hypotheses" / "tiny.yaml")
    assert state["dirty"] is True and state["file"] == "modified"


def test_outside_a_repository_or_without_git(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, tiny_yaml: str, repo: Path
) -> None:
    loose = tmp_path / "loose.yaml"
    loose.write_text(tiny_yaml)
    assert git_state(loose) is None
    monkeypatch.setattr(provenance.shutil, "which", lambda _: None)
    assert git_state(repo / "hypotheses" / "tiny.yaml") is None


def test_a_git_that_hangs_is_given_up(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, repo: Path
) -> None:
    slow = tmp_path / "bin" / "git"
    slow.parent.mkdir()
    slow.write_text("#!/bin/sh\nexec sleep 5\n")
    slow.chmod(0o755)
    monkeypatch.setattr(provenance.shutil, "which", lambda _: str(slow))
    monkeypatch.setattr(provenance, "GIT_TIMEOUT", 0.2)
    assert git_state(repo / "hypotheses" / "tiny.yaml") is None


@pytest.mark.slow
def test_the_report_names_the_version_and_commit(repo: Path, tmp_path: Path) -> None:
    out = tmp_path / "reports"
    falsify.run(repo / "hypotheses" / "tiny.yaml", cache=tmp_path / "cache", out=out)
    commit = _git(repo, "rev-parse", "HEAD")
    report = (out / "tiny.md").read_text()
    assert (
        f"- falsify {__version__}; git commit `{commit}` (clean; the file is committed)" in report
    )
    record = json.loads((out / "tiny.json").read_text())
    assert record["falsify_version"] == __version__ and record["git"]["commit"] == commit


def test_citation_cff() -> None:
    cff = yaml.safe_load((ROOT / "CITATION.cff").read_text())
    assert {"cff-version", "message", "title", "authors"} <= cff.keys()
    assert cff["cff-version"] == "1.2.0" and cff["authors"][0]["name"]
    assert cff["version"] == __version__ and cff["type"] == "software"
