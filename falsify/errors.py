"""User-facing errors.

Every mistake a user can make (a malformed hypothesis file, an unknown layer, an impossible
request) is raised as a :class:`FalsifyError`. The CLI prints ``str(error)`` on one line and
exits non-zero, without a traceback. The message template follows scikit-learn's parameter
validation: "The 'FIELD' of FILE (line N) must be EXPECTED. Got FOUND instead."
"""

from __future__ import annotations

import difflib
from collections.abc import Iterable
from pathlib import Path

__all__ = [
    "FalsifyDeprecationWarning",
    "FalsifyError",
    "HypothesisError",
    "LocatedError",
    "did_you_mean",
    "field_error",
]


class FalsifyError(Exception):
    """Base class of every error caused by user input rather than by a bug."""


class FalsifyDeprecationWarning(DeprecationWarning):
    """A hypothesis file spelled the old way; it still works. The loader turns these into one
    note per file, which the CLI prints as one line."""


class HypothesisError(FalsifyError):
    """A hypothesis file that cannot be read or validated."""


class LocatedError(FalsifyError):
    """A user mistake about one field of a hypothesis file, raised where it is found.

    Builders, data readers, kinds' checks and options raise it with the field's location
    inside the file (e.g. ``("test", "layers", 0)``); one boundary (the runner) turns it into
    the file's one-line message with the line number. ``str()`` reads well on its own.
    """

    def __init__(
        self,
        loc: tuple[str | int, ...],
        expected: str,
        found: object,
        choices: Iterable[str] | None = None,
    ) -> None:
        self.loc = loc
        self.expected = expected
        self.found = found
        self.choices = list(choices) if choices is not None else None
        super().__init__(field_error(None, ".".join(map(str, loc)), expected, found, None, choices))

    def __reduce__(self) -> tuple[type[LocatedError], tuple[object, ...]]:
        # Rebuilt from its fields, so one raised in a training job survives the trip back
        # from the worker process (the default pickles only the message).
        return type(self), (self.loc, self.expected, self.found, self.choices)


def did_you_mean(found: object, choices: Iterable[str]) -> str:
    """' Did you mean 'x'?' when ``found`` is a near miss of one of ``choices``, else ''."""
    close = difflib.get_close_matches(str(found), list(choices), n=1, cutoff=0.6)
    return f" Did you mean {close[0]!r}?" if close else ""


def field_error(
    path: str | Path | None,
    field: str,
    expected: str,
    found: object,
    line: int | None = None,
    choices: Iterable[str] | None = None,
) -> str:
    """Format the one error template used everywhere."""
    where = f" of {path}" if path is not None else ""
    if line is not None:
        where += f" (line {line})"
    hint = did_you_mean(found, choices) if choices is not None else ""
    return f"The {field!r}{where} must be {expected}. Got {found!r} instead.{hint}"
