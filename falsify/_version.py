"""The installed version of falsify (distribution ``falsify-interp``; docs: README.md)."""

from __future__ import annotations

from importlib.metadata import PackageNotFoundError, version

__all__ = ["DISTRIBUTION", "__version__"]

# The package index name: ``falsify`` there is another project (README.md, "Install").
DISTRIBUTION = "falsify-interp"

try:
    __version__ = version(DISTRIBUTION)
except PackageNotFoundError:  # run from a source tree that was never installed
    __version__ = "unknown"
