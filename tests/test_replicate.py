"""`falsify replicate`: the same file on fresh, disjoint seeds, compared with its run."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

import falsify
from falsify.cli.main import CONTRADICTED, main
from falsify.errors import FalsifyError
from falsify.runner.replicate import default_offset, replication_file, replication_seeds
from falsify.runner.replicates import recipe_of
from tests.helpers.populations import TINY_BETWEEN


def test_default_offset_is_the_next_block_of_1000() -> None:
    assert default_offset(range(10)) == 1000
    assert default_offset([0, 999]) == 1000
    assert default_offset([5, 1000]) == 2000
    assert replication_seeds(range(3)) == (1000, 1001, 1002)
    assert replication_seeds([7, 3], 10) == (17, 13)


@pytest.mark.parametrize(
    "seeds,offset,needle",
    [
        ([0, 1, 2], 1, "disjoint"),  # 1 and 2 are shared
        ([0, 10], 10, "disjoint"),
        ([0, 1], 0, "positive"),
        ([0, 2**32 - 2], 5, "at most 4294967295"),
    ],
)
def test_an_offset_that_overlaps_or_overflows_is_refused(
    seeds: list[int], offset: int, needle: str
) -> None:
    with pytest.raises(FalsifyError, match=needle):
        replication_seeds(seeds, offset)


def test_the_replication_file_changes_only_the_seeds(write) -> None:
    hf = falsify.load(write(TINY_BETWEEN))
    again = replication_file(hf)
    assert again.hypothesis.population.seeds == (1000, 1001, 1002)
    assert recipe_of(again.hypothesis.population) == recipe_of(hf.hypothesis.population)
    assert again.hypothesis.test == hf.hypothesis.test
    assert again.hypothesis.prediction == hf.hypothesis.prediction
    assert again.overrides == ("population.seeds=[1000,1001,1002]",)
    assert again.sha256 == hf.sha256  # the file as written is the same file


def _parts(path: Path) -> list[dict[str, object]]:
    return json.loads(path.read_text())["parts"]


def test_replicate_end_to_end(write, tmp_path: Path, capsys) -> None:
    path = write(TINY_BETWEEN)
    out, cache = tmp_path / "reports", tmp_path / "cache"
    common = ["--cache", str(cache), "--quiet"]
    assert main(["replicate", str(path), "--out", str(out), *common]) in (0, CONTRADICTED)
    line = capsys.readouterr().out
    assert "(seeds +1000), 12 replicates (0 cached)" in line
    assert line.endswith(f"-> {out / 'between_tiny.replication.md'}\n")
    rec = json.loads((out / "between_tiny.replication.json").read_text())
    assert rec["original"]["seeds"] == [0, 1, 2]
    assert rec["replication"]["seeds"] == [1000, 1001, 1002]
    # The original is exactly what `falsify run` writes; the replication is `falsify run` on the
    # shifted seeds; both find every model in the cache.
    assert main(["run", str(path), "--out", str(tmp_path / "a"), *common]) == 0
    assert "6 replicates (6 cached)" in capsys.readouterr().out
    assert _parts(tmp_path / "a" / "between_tiny.json") == _parts(out / "between_tiny.json")
    shifted = ["--set", "population.seeds=[1000,1001,1002]"]
    assert main(["run", str(path), "--out", str(tmp_path / "b"), *shifted, *common]) == 0
    assert "6 replicates (6 cached)" in capsys.readouterr().out
    again = out / "replication" / "between_tiny.json"
    assert _parts(tmp_path / "b" / "between_tiny.json") == _parts(again)
    assert "`population.seeds=[1000,1001,1002]`" in (again.with_suffix(".md")).read_text()
    # The side-by-side report and the agreement as defined in docs/verdicts.md.
    (part,) = rec["by_part"]
    inside = part["original_ci_low"] <= part["replication_estimate"] <= part["original_ci_high"]
    same = part["original_verdict"] == part["replication_verdict"]
    assert part["same_verdict"] == same and part["in_original_ci"] == inside
    verdicts = {part["original_verdict"], part["replication_verdict"]}
    if verdicts == {"SUPPORTED", "FALSIFIED"}:
        expected = "contradicts"
    elif not same:
        expected = "verdict differs"
    else:
        expected = "agrees" if inside else "estimate differs"
    assert rec["agreement"] == expected  # one part: its verdict is the hypothesis' verdict
    text = (out / "between_tiny.replication.md").read_text()
    assert text.startswith(f"# between_tiny: replication {rec['agreement']}\n")
    assert "| seeds | 0–2 | 1000–1002 |" in text
    assert "[replication/between_tiny.md](replication/between_tiny.md)" in text
    assert "[between_tiny](between_tiny.replication.md)" in (out / "replications.md").read_text()
    # index.md of --out lists the original only (the replication record is not a run summary)
    assert (out / "index.md").read_text().count("[between_tiny](between_tiny.md)") == 1
    # The Python API returns the same comparison and writes nothing without `out`.
    result = falsify.replicate(path, cache=cache)
    assert result.agreement == rec["agreement"] and result.offset == 1000
    assert result.parts["replication_estimate"].iloc[0] == pytest.approx(
        part["replication_estimate"]
    )


def test_a_confident_contradiction_is_flagged_and_exits_4(write, tmp_path: Path, capsys) -> None:
    """δ placed between the two runs' lower CI ends: the run whose CI reaches −δ is SUPPORTED,
    the other FALSIFIED (docs/verdicts.md), a real contradiction between the two seed sets."""
    path = write(TINY_BETWEEN)
    out, cache = tmp_path / "reports", tmp_path / "cache"
    common = ["--out", str(out), "--cache", str(cache), "--quiet"]
    main(["replicate", str(path), *common])
    (part,) = json.loads((out / "between_tiny.replication.json").read_text())["by_part"]
    lows = sorted([part["original_ci_low"], part["replication_ci_low"]])
    # preconditions: noisy labels lower accuracy clearly in both runs, by different amounts
    assert part["original_ci_high"] < 0 and part["replication_ci_high"] < 0 and lows[0] < lows[1]
    sesoi = -(lows[0] + lows[1]) / 2
    capsys.readouterr()
    status = main(["replicate", str(path), "--set", f"prediction.sesoi={sesoi}", *common])
    assert status == CONTRADICTED == 4
    assert capsys.readouterr().out.startswith("contradicts      between_tiny: ")
    text = (out / "between_tiny.replication.md").read_text()
    assert text.startswith(
        "# between_tiny: replication contradicts\n\n> **CONFIDENT CONTRADICTION.**"
    )
    assert (
        "> **1 CONFIDENT CONTRADICTION:** [between_tiny]" in (out / "replications.md").read_text()
    )


def test_a_bad_offset_fails_before_training(write, tmp_path: Path, capsys) -> None:
    path = write(TINY_BETWEEN)
    cache = tmp_path / "cache"
    args = ["replicate", str(path), "--seed-offset", "2", "--cache", str(cache), "--quiet"]
    assert main([*args, "--out", str(tmp_path / "r")]) == 1
    err = capsys.readouterr().err
    assert err.startswith(
        "error: The seed offset 2 must give seeds disjoint from the file's [0, 1, 2]."
    )
    assert not cache.exists()  # nothing was trained


def test_a_list_of_checkpoints_is_not_replicated(write, tiny_yaml: str) -> None:
    """A list names the models themselves: new seeds would relabel the same models."""
    text = tiny_yaml.replace("hidden: [16]}", "hidden: [16], checkpoint: [a.pt, b.pt, c.pt]}")
    hf = falsify.load(write(text))
    with pytest.raises(FalsifyError, match=r"'population.model.checkpoint' of .* \(line 5\)"):
        replication_file(hf)
    template = falsify.load(write(text.replace("[a.pt, b.pt, c.pt]", "'w/{seed}.pt'")))
    assert replication_file(template).hypothesis.population.seeds == (1000, 1001, 1002)
