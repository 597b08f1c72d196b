"""Where a hypothesis file comes from: the git commit of the working tree that holds it
(docs/reports.md, "Provenance"), so a report can be cited with the exact version of its file.

Read with the ``git`` command (a subprocess with a timeout); ``None`` when git is not
installed, the file is not in a repository, or git does not answer in time.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path
from typing import Any

__all__ = ["GIT_TIMEOUT", "git_state"]

GIT_TIMEOUT = 5.0  # seconds per git call; a slow network file system must not hang a run


def _git(folder: Path, *args: str) -> str | None:
    git = shutil.which("git")
    if git is None:
        return None
    # No optional locks: `status` must not take the index lock of a repository in use.
    env = {**os.environ, "GIT_OPTIONAL_LOCKS": "0"}
    try:
        done = subprocess.run(
            [git, "-C", str(folder), *args],
            capture_output=True,
            text=True,
            timeout=GIT_TIMEOUT,
            env=env,
            check=False,
        )
    except (OSError, subprocess.TimeoutExpired):
        return None
    return done.stdout if done.returncode == 0 else None


def git_state(path: Path) -> dict[str, Any] | None:
    """``{"commit", "dirty", "file"}`` for the repository holding ``path``: the commit checked
    out, whether any tracked file differs from it, and the file's own state (``committed``,
    ``modified`` or ``untracked``); ``None`` outside a repository or without git."""
    path = Path(path).resolve()
    folder = path.parent
    commit = _git(folder, "rev-parse", "--verify", "HEAD")
    if commit is None:
        return None
    tracked = _git(folder, "status", "--porcelain", "--untracked-files=no")
    own = _git(folder, "status", "--porcelain", "--untracked-files=all", "--", path.name)
    if tracked is None or own is None:
        return None
    state = "untracked" if own.startswith("??") else "modified" if own.strip() else "committed"
    return {"commit": commit.strip(), "dirty": bool(tracked.strip()), "file": state}
