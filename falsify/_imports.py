"""Resolving a user's ``"package.module:function"`` import path, and calling it, with errors
that say what is wrong.

The module is imported with the hypothesis file's folder and the working directory on
``sys.path`` for the duration of the import, so a package beside the hypothesis file or in the
project the command runs from is found without being installed. :func:`call_user` is the one
place falsify calls such a function: what it raises is reported as the user's, naming the field,
the user's exception and where in their file it was raised (the traceback with
``FALSIFY_DEBUG=1``).
"""

from __future__ import annotations

import contextlib
import hashlib
import importlib
import inspect
import os
import pkgutil
import sys
import traceback
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from types import ModuleType
from typing import Any

from falsify.errors import FalsifyError, LocatedError

__all__ = ["UserCodeError", "call_user", "import_callable", "source_sha256"]


class UserCodeError(LocatedError):
    """A problem with a field of ``population`` that names user code or user files."""


@contextlib.contextmanager
def _search_path(folders: Iterable[Path]) -> Iterator[None]:
    added = [str(f) for f in folders if str(f) not in sys.path]
    sys.path[:0] = added
    try:
        yield
    finally:
        for f in added:
            with contextlib.suppress(ValueError):
                sys.path.remove(f)


def _sibling_modules(module_name: str) -> list[str]:
    """Full names of the modules beside ``module_name`` (in its parent package, or top level)."""
    parent, _, _ = module_name.rpartition(".")
    if not parent:
        return sorted({m.name for m in pkgutil.iter_modules()})
    try:
        pkg = importlib.import_module(parent)
    except ImportError:
        return []
    return sorted(f"{parent}.{m.name}" for m in pkgutil.iter_modules(getattr(pkg, "__path__", [])))


def _import_module(module_name: str, loc: tuple[str | int, ...], text: str) -> ModuleType:
    try:
        return importlib.import_module(module_name)
    except ModuleNotFoundError as exc:
        missing = exc.name or module_name
        if module_name == missing or module_name.startswith(f"{missing}."):
            choices = _sibling_modules(missing)
            close = _closest(missing, choices)
            hint = f"; did you mean {close + text[len(module_name) :]!r}?" if close else ""
            raise UserCodeError(
                loc,
                f"'module:function' with an importable module (no module named {missing!r}{hint})",
                text,
            ) from None
        raise UserCodeError(
            loc, f"a module that imports cleanly (it needs {missing!r}, not installed)", text
        ) from None
    except Exception as exc:
        raise UserCodeError(
            loc,
            f"a module that imports cleanly (importing it raised {type(exc).__name__}: {exc})",
            text,
        ) from None


def _closest(name: str, choices: list[str]) -> str | None:
    import difflib

    close = difflib.get_close_matches(name, choices, n=1, cutoff=0.6)
    return close[0] if close else None


def import_callable(
    text: str, loc: tuple[str | int, ...], search: Iterable[Path] = ()
) -> Callable[..., Any]:
    """The function ``"package.module:attr"`` names (``attr`` may be dotted, e.g. ``Cls.make``)."""
    module_name, _, attr_path = text.partition(":")
    with _search_path([*search, Path.cwd()]):
        module = _import_module(module_name, loc, text)
    obj: Any = module
    for i, part in enumerate(attr_path.split(".")):
        if not hasattr(obj, part):
            owner = ".".join([module_name, *attr_path.split(".")[:i]])
            names = [n for n in dir(obj) if not n.startswith("_")]
            close = _closest(part, names)
            hint = f"; did you mean '{module_name}:{close}'?" if close and i == 0 else ""
            raise UserCodeError(
                loc,
                f"'module:function' naming an attribute of the module ({owner} has no {part!r}"
                f"{hint})",
                text,
            )
        obj = getattr(obj, part)
    if not callable(obj):
        raise UserCodeError(loc, "a function (callable)", f"{text} = {type(obj).__name__}")
    return obj


def _where(exc: BaseException) -> str:
    """``file:line`` of the deepest frame outside falsify and installed packages (the user's)."""
    frames = traceback.extract_tb(exc.__traceback__)
    ours = Path(__file__).parent
    for frame in reversed(frames):
        path = Path(frame.filename)
        if ours not in path.parents and not {"site-packages", "dist-packages"} & set(path.parts):
            return f"{frame.filename}:{frame.lineno}"
    return f"{frames[-1].filename}:{frames[-1].lineno}" if frames else "?"


def call_user(
    fn: Callable[..., Any], loc: tuple[str | int, ...], text: str, /, **kwargs: Any
) -> Any:
    """``fn(**kwargs)``; an exception it raises becomes a :class:`UserCodeError` at ``loc``.

    A :class:`FalsifyError` the user's code raises on purpose passes through unchanged. With
    ``FALSIFY_DEBUG`` set, the user's traceback is printed to stderr first.
    """
    try:
        return fn(**kwargs)
    except FalsifyError:
        raise
    except Exception as exc:
        if os.environ.get("FALSIFY_DEBUG"):
            traceback.print_exception(exc, file=sys.stderr)
        message = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
        raised = f"{type(exc).__name__}: {message}" if message else type(exc).__name__
        raise UserCodeError(
            loc,
            "a function that runs without raising (your code raised it, not falsify; "
            "FALSIFY_DEBUG=1 prints your traceback)",
            f"{text} raising {raised} at {_where(exc)}",
        ) from exc


def source_sha256(fn: Callable[..., Any]) -> str:
    """SHA-256 of the source file defining ``fn`` (so editing it changes cache keys)."""
    try:
        path = inspect.getsourcefile(inspect.unwrap(fn))
    except TypeError:
        path = None
    if path is None or not Path(path).is_file():
        module = sys.modules.get(getattr(fn, "__module__", "") or "")
        path = getattr(module, "__file__", None)
    if path is None or not Path(path).is_file():
        return "no-source-file"
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()
