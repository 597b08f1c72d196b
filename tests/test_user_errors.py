"""An exception raised inside the user's own factory or loader is reported as the user's."""

from __future__ import annotations

import pytest

from falsify.cli.main import main
from tests.test_user_models import USER

_CASES = [
    (
        "tests.helpers.usermodels:make_net",
        "tests.helpers.usermodels:make_broken",
        "population.model.factory",
        "RuntimeError: my factory cannot build width 12",
    ),
    (
        "tests.helpers.usermodels:load_tensors",
        "tests.helpers.usermodels:load_broken",
        "population.data.loader",
        "ValueError: my loader cannot split off 400 test rows",
    ),
]


@pytest.mark.parametrize(("old", "new", "field", "raised"), _CASES)
@pytest.mark.parametrize("command", ["check", "run"])
def test_user_code_errors_name_the_user(
    write, tmp_path, capsys, monkeypatch, old, new, field, raised, command
) -> None:
    monkeypatch.delenv("FALSIFY_DEBUG", raising=False)
    path = write(USER.replace(old, new))
    args = [command, str(path), "--cache", str(tmp_path / "cache")]
    assert main(args + (["--out", str(tmp_path / "r"), "--quiet"] if command == "run" else [])) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1, err
    assert f"The '{field}' of {path} (line " in err and raised in err
    assert "usermodels.py:" in err  # where in the user's file it was raised
    assert "internal error" not in err and "bug in falsify" not in err
    assert "cannot be split as asked" not in err


@pytest.mark.parametrize(("old", "new", "field", "raised"), _CASES)
def test_debug_flag_prints_the_users_traceback(
    write, tmp_path, capsys, monkeypatch, old, new, field, raised
) -> None:
    monkeypatch.setenv("FALSIFY_DEBUG", "1")
    path = write(USER.replace(old, new))
    assert main(["check", str(path), "--cache", str(tmp_path / "cache")]) == 1
    err = capsys.readouterr().err
    assert "Traceback (most recent call last)" in err and new.split(":")[1] in err
    assert err.rstrip().splitlines()[-1].startswith(f"error: The '{field}'")
