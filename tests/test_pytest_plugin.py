from __future__ import annotations

from importlib.metadata import entry_points
from pathlib import Path

import pytest

from tests.conftest import TINY

pytest_plugins = ["pytester"]

# Claims whose verdict follows from the rules whatever the trained models show:
# an equivalence margin of 0.999 holds any correlation's CI (SUPPORTED); a positive claim
# needing r ≥ 0.999 is ruled out (FALSIFIED); a ±0.01 equivalence band cannot be decided
# from 2 replicates, whose 90% t interval is ±6.3 standard errors wide (INCONCLUSIVE).
SUPPORTED = TINY.replace("id: tiny", "id: wide_none").replace(
    "direction: positive\n  sesoi: 0.1", "direction: none\n  sesoi: 0.999"
)
FALSIFIED = TINY.replace("id: tiny", "id: huge_effect").replace("sesoi: 0.1", "sesoi: 0.999")
INCONCLUSIVE = (
    TINY.replace("id: tiny", "id: two_seeds")
    .replace("seeds: 3", "seeds: 2")
    .replace("direction: positive\n  sesoi: 0.1", "direction: none\n  sesoi: 0.01")
)


@pytest.fixture(autouse=True)
def _importable(monkeypatch: pytest.MonkeyPatch) -> None:
    # The runs below are subprocesses (a second in-process run would re-import numpy); they
    # must import this checkout of falsify whether or not it is installed.
    monkeypatch.setenv("PYTHONPATH", str(Path(__file__).parents[1]))


@pytest.fixture
def suite(pytester: pytest.Pytester):
    folder = pytester.mkdir("hyps")
    for name, text in (("a", SUPPORTED), ("b", FALSIFIED), ("c", INCONCLUSIVE)):
        (folder / f"{name}.yaml").write_text(text)
    (folder / "not_a_hypothesis.yaml").write_text("just: config\n")
    return pytester


def _args(pytester: pytest.Pytester) -> list[str]:
    # Installed, the plugin loads through its pytest11 entry point; from a bare checkout it
    # has to be named.
    installed = any(ep.value == "falsify.pytest_plugin" for ep in entry_points(group="pytest11"))
    return [
        *([] if installed else ["-p", "falsify.pytest_plugin"]),
        f"--falsify-cache={pytester.path / 'cache'}",
    ]


def test_collects_passes_fails_and_skips(suite: pytest.Pytester) -> None:
    result = suite.runpytest_subprocess("hyps", *_args(suite), "-rs")
    result.assert_outcomes(passed=1, failed=1, skipped=1)
    result.stdout.fnmatch_lines(
        [
            "*FALSIFIED: Selective units matter more*",
            "*hidden1: estimate *, 90% CI *-> FALSIFIED*",
            "*rule: SUPPORTED when the 90% CI lies above 0*",
            "*INCONCLUSIVE with 2 replicates*",
        ]
    )
    # The second run reuses every cached replicate.
    again = suite.runpytest_subprocess("hyps", *_args(suite), "--falsify-out=reports")
    again.assert_outcomes(passed=1, failed=1, skipped=1)
    assert (
        "of which 3 loaded from the cache" in (suite.path / "reports" / "wide_none.md").read_text()
    )


def test_collection_is_opt_in(suite: pytest.Pytester) -> None:
    suite.makepyfile(test_plain="def test_ok():\n    assert True\n")
    result = suite.runpytest_subprocess(*_args(suite))  # no path named: only ordinary tests
    result.assert_outcomes(passed=1)
    flagged = suite.runpytest_subprocess(*_args(suite), "--falsify", "--collect-only", "-q")
    flagged.stdout.fnmatch_lines(["*a.yaml::a*", "*b.yaml::b*", "*c.yaml::c*"])
    assert "not_a_hypothesis" not in flagged.stdout.str()


def test_invalid_file_fails_with_its_error_line(pytester: pytest.Pytester) -> None:
    bad = pytester.mkdir("bad")
    (bad / "typo.yaml").write_text(TINY.replace("sesoi: 0.1", "sesoi: 0.1\n  alpah: 0.05"))
    result = pytester.runpytest_subprocess("bad", *_args(pytester))
    result.assert_outcomes(failed=1)
    result.stdout.fnmatch_lines(["*'prediction.alpah'*Did you mean 'alpha'?*"])
    assert "Traceback" not in result.stdout.str()
