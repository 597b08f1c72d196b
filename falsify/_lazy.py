"""Package attributes that import their module on first use (PEP 562 module ``__getattr__``).

A package's ``__init__`` re-exports names from its modules for users, but importing the
package for one light module (the CLI reading ``falsify.runner.device.DEVICES``) must not pay
for torch, pandas or statsmodels. Each package lists its names here instead of importing them.
"""

from __future__ import annotations

import importlib
import sys
from collections.abc import Callable, Mapping
from typing import Any

__all__ = ["lazy_attributes"]


def lazy_attributes(
    package: str, names: Mapping[str, str]
) -> tuple[Callable[[str], Any], Callable[[], list[str]]]:
    """``__getattr__`` and ``__dir__`` for ``package`` serving ``names`` (name -> module path).

    The first access imports the module and stores the value on the package, so later accesses
    are plain attribute lookups.
    """

    def __getattr__(name: str) -> Any:
        module = names.get(name)
        if module is None:
            raise AttributeError(f"module {package!r} has no attribute {name!r}")
        value = getattr(importlib.import_module(module), name)
        setattr(sys.modules[package], name, value)
        return value

    def __dir__() -> list[str]:
        return sorted({*vars(sys.modules[package]), *names})

    return __getattr__, __dir__
