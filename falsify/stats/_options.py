"""String options of the statistics' Python API: an unknown one is an error, not a fallback.

The hypothesis file format already restricts these values; this guards direct calls.
"""

from __future__ import annotations

from collections.abc import Sequence

__all__ = ["check_option"]


def check_option(name: str, value: object, choices: Sequence[str]) -> None:
    """Raise ``ValueError`` naming the option, its valid ``choices`` and ``value`` if not one."""
    if value not in choices:
        raise ValueError(
            f"The option {name!r} must be one of {list(choices)}. Got {value!r} instead."
        )
