"""The report says what each p-value tests, the right way round for `none` claims."""

from __future__ import annotations

import pytest

import falsify
from falsify.stats.decide import ADJUSTMENT_NAMES


def _report(write, tmp_path, text: str) -> str:
    out = tmp_path / "reports"
    falsify.run(write(text), cache=tmp_path / "cache", out=out)
    return (out / "tiny.md").read_text()


def test_none_claim_explains_tost_and_minimum_effect(write, tiny_yaml, tmp_path) -> None:
    report = _report(write, tmp_path, tiny_yaml.replace("direction: positive", "direction: none"))
    index = (tmp_path / "reports" / "index.md").read_text()
    assert "for a `none` claim the equivalence (TOST) null that the effect lies outside" in index
    assert "p (support) is the equivalence test (TOST) that the effect lies inside ±δ" in report
    assert "p (falsify) is the minimum-effect test that it lies outside ±δ" in report
    assert "the claim's effect is absent" not in report  # the directional wording


def test_directional_claim_keeps_its_wording(write, tiny_yaml, tmp_path) -> None:
    report = _report(write, tmp_path, tiny_yaml)
    assert "p (support) tests the null that the claim's effect is absent (θ ≤ 0)" in report
    assert "TOST" not in report


def test_negative_claim_states_its_own_nulls(write, tiny_yaml, tmp_path) -> None:
    # falsify/stats/verdict.py p_values: a negative claim tests H0 θ ≥ 0 and H0 θ ≤ −δ.
    report = _report(
        write, tmp_path, tiny_yaml.replace("direction: positive", "direction: negative")
    )
    assert "p (support) tests the null that the claim's effect is absent (θ ≥ 0)" in report
    assert "(θ ≤ −δ)" in report
    assert "(θ ≤ 0)" not in report and "(θ ≥ δ)" not in report


@pytest.mark.parametrize(("combine", "adjust"), [("all", "holm"), ("any", "bonferroni")])
def test_adjustment_has_its_proper_name(write, tiny_yaml, tmp_path, combine, adjust) -> None:
    two_parts = (
        tiny_yaml.replace("hidden: [16]", "hidden: [16, 16]")
        .replace("layers: [hidden1]", "layers: [hidden1, hidden2]")
        .replace("sesoi: 0.1", f"sesoi: 0.1\n  combine: {combine}\n  adjust: {adjust}")
    )
    report = _report(write, tmp_path, two_parts)
    side = "falsify" if combine == "all" else "support"
    name = ADJUSTMENT_NAMES[adjust]
    assert name[0].isupper()
    assert f"p ({side}) is {name}-adjusted (`adjust: {adjust}`) across the parts" in report
    assert f"{adjust}-adjusted" not in report
