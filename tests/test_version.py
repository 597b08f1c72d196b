"""The version module: the installed distribution's version, shown by ``--version`` and reports."""

from __future__ import annotations

from importlib.metadata import version

from falsify._version import DISTRIBUTION, __version__
from falsify.cli.main import main


def test_version_is_the_installed_distribution(capsys) -> None:
    assert DISTRIBUTION == "falsify-interp"
    assert __version__ == version(DISTRIBUTION) != "unknown"
    try:
        main(["--version"])
    except SystemExit as exc:
        assert exc.code == 0
    assert capsys.readouterr().out.strip() == f"falsify {__version__}"
