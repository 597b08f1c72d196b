"""User-facing errors.

Every mistake a user can make (a malformed hypothesis file, an unknown layer, an impossible
request) is raised as a :class:`FalsifyError`. The CLI prints ``str(error)`` on one line and
exits non-zero, without a traceback. The message template follows scikit-learn's parameter
validation: "The 'FIELD' of FILE (line N) must be EXPECTED. Got FOUND instead."
"""

from __future__ import annotations

import difflib
import reprlib
from collections.abc import Iterable
from pathlib import Path

__all__ = [
    "FalsifyDeprecationWarning",
    "FalsifyError",
    "HypothesisError",
    "LocatedError",
    "did_you_mean",
    "field_error",
    "quote",
    "truncate",
]

# The longest quotation of a user's value in a message: a file can hold a megabyte-long string
# or, through YAML aliases, a huge structure, and an error line must stay readable.
QUOTE_LIMIT = 200

_REPR = reprlib.Repr()
# Strings and numbers are elided in the middle only far beyond the cut, so the cut shows a prefix.
_REPR.maxstring = _REPR.maxother = _REPR.maxlong = 4 * QUOTE_LIMIT
_REPR.maxlist = _REPR.maxtuple = _REPR.maxdict = _REPR.maxset = QUOTE_LIMIT // 2
_REPR.maxlevel = 6


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


def quote(value: object, limit: int = QUOTE_LIMIT) -> str:
    """``repr(value)``, cut to ``limit`` characters with an ellipsis when longer (built
    lazily, so a huge value is never formatted whole)."""
    try:
        text = _REPR.repr(value)
    except ValueError:  # an integer beyond Python's limit on converting digits to text
        text = "<a number too long to print>"
    return truncate(text, limit)


def truncate(text: str, limit: int = QUOTE_LIMIT) -> str:
    """``text`` cut to ``limit`` characters, the last one an ellipsis, when longer."""
    return text if len(text) <= limit else f"{text[: limit - 1]}…"


def did_you_mean(found: object, choices: Iterable[str]) -> str:
    """' Did you mean 'x'?' when ``found`` is a near miss of one of ``choices``, else ''."""
    if not isinstance(found, str | int | float) or len(str(found)) > QUOTE_LIMIT:
        return ""  # a structure or a long text is no misspelling of a name
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
    return f"The {quote(field)}{where} must be {expected}. Got {quote(found)} instead.{hint}"
