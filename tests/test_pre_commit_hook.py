"""The pre-commit hook of .pre-commit-hooks.yaml: its entry checks a file, its pattern picks
hypothesis files (docs/python-api.md, "pre-commit")."""

from __future__ import annotations

import os
import re
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import yaml

ROOT = Path(__file__).parents[1]
(HOOK,) = yaml.safe_load((ROOT / ".pre-commit-hooks.yaml").read_text())


def _entry(*files: Path, cwd: Path) -> subprocess.CompletedProcess[str]:
    # pre-commit runs the entry with the changed files appended, in the hook's environment
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}"}
    cmd = [*shlex.split(HOOK["entry"]), *map(str, files)]
    return subprocess.run(cmd, capture_output=True, text=True, env=env, cwd=cwd, check=False)


def test_the_hook_is_falsify_check() -> None:
    assert HOOK["id"] == "falsify-check" and HOOK["language"] == "python"
    assert shlex.split(HOOK["entry"]) == ["falsify", "check"]


def test_the_pattern_picks_hypothesis_files_only() -> None:
    pattern = re.compile(HOOK["files"])
    bundled = [p.relative_to(ROOT).as_posix() for p in (ROOT / "hypotheses").glob("*.yaml")]
    assert bundled and all(pattern.search(p) for p in bundled)
    assert pattern.search("project/hypotheses/claim.yml")
    for other in (".pre-commit-config.yaml", ".github/workflows/ci.yaml", "hypotheses/old/x.txt"):
        assert not pattern.search(other), other


def test_the_entry_passes_a_good_file_and_fails_a_bad_one(tmp_path: Path) -> None:
    folder = tmp_path / "hypotheses"
    folder.mkdir()
    good = folder / "good.yaml"
    shutil.copy(ROOT / "hypotheses" / "selectivity_predicts_importance.yaml", good)
    bad = folder / "bad.yaml"
    bad.write_text(good.read_text().replace("alpha: 0.05", "alpah: 0.05"))
    done = _entry(good, bad, cwd=tmp_path)  # one process: each file is checked on its own
    assert done.returncode == 1
    assert f"ok  {good}: selectivity_predicts_importance" in done.stdout
    (line,) = done.stderr.strip().splitlines()
    assert str(bad) in line and "'prediction.alpah'" in line and "Traceback" not in line
