"""The ``falsify`` command line."""

from falsify.cli.main import main

__all__ = ["main"]
