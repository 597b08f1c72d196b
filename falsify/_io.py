"""Atomic, durable file writes: a temporary file in the same folder, flushed, then a rename.

A reader (or a run killed at any moment, or a machine that loses power) sees either the old file
or the whole new one: the data is flushed to disk before the rename publishes it, and the folder
is flushed after, so the rename itself survives. A temporary name holds its writer's host and
process id, so a later write to the same folder removes what a killed writer left (``sweep``)
and never the temporary file of a writer still at work.
"""

from __future__ import annotations

import os
import shutil
import socket
import tempfile
from collections.abc import Callable
from pathlib import Path

__all__ = ["atomic_write", "atomic_write_text", "fsync_path", "sweep", "temp_prefix"]

_MARK = ".tmp-"  # in every temporary name, before the writer's host and pid


def temp_prefix(stem: str) -> str:
    """The start of a temporary name for ``stem``, naming this host and process."""
    return f".{stem}{_MARK}{socket.gethostname()}-{os.getpid()}."


def sweep(folder: Path) -> None:
    """Remove the temporary files and folders in ``folder`` whose writer on this host is gone."""
    host = socket.gethostname()
    for entry in folder.glob(f".*{_MARK}*"):
        owner = entry.name.split(_MARK, 1)[1].split(".", 1)[0]
        name, _, pid = owner.rpartition("-")
        if name == host and pid.isdigit() and not _alive(int(pid)):
            if entry.is_dir():
                shutil.rmtree(entry, ignore_errors=True)
            else:
                entry.unlink(missing_ok=True)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def atomic_write(path: Path, write: Callable[[Path], None]) -> None:
    """Call ``write(tmp)`` on a temporary path beside ``path``, then rename it to ``path``.

    The temporary name keeps ``path``'s suffix, for writers that infer the format from it.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    sweep(path.parent)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=temp_prefix(path.stem), suffix=path.suffix)
    os.close(fd)
    os.chmod(tmp, 0o666 & ~_umask())  # mkstemp makes 0600; a shared cache must be readable
    try:
        write(Path(tmp))
        fsync_path(Path(tmp))
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    fsync_path(path.parent)


def fsync_path(path: Path) -> None:
    """Flush a file's data (or a folder's entries) to disk."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def atomic_write_text(path: Path, text: str) -> None:
    atomic_write(path, lambda p: p.write_text(text))
