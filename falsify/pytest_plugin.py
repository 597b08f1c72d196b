"""pytest plugin: each hypothesis file is a test item whose assertion is the claim.

SUPPORTED passes; FALSIFIED fails with the claim, the estimate, the CI and the rule that
decided; INCONCLUSIVE is skipped with the number of replicates a conclusive run would likely
need. Replicates are cached (``--falsify-cache``), so a second run is fast.

Collection is opt-in, so a project's own test run is unaffected: hypothesis files are
collected only with ``--falsify``, or when a YAML file or the folder that directly holds it is
named on the command line (``pytest hypotheses/``). Registered through the ``pytest11`` entry
point.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

__all__ = ["HypothesisItem", "HypothesisYaml"]

_KEYS = {"id", "population", "test", "prediction"}


def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("falsify", "falsify hypothesis files")
    group.addoption(
        "--falsify",
        action="store_true",
        help="collect every hypothesis file (*.yaml) under the given paths as a test",
    )
    group.addoption(
        "--falsify-cache",
        default=".falsify",
        help="model cache folder (default: .falsify)",
    )
    group.addoption(
        "--falsify-out",
        default=None,
        help="also write the Markdown reports to this folder",
    )
    group.addoption("--falsify-device", default="auto", help="auto, cpu or cuda")
    group.addoption(
        "--falsify-seeds", type=int, default=None, help="override the number of replicates"
    )


def _named_on_command_line(config: pytest.Config, file_path: Path) -> bool:
    root = Path(config.invocation_params.dir)
    for arg in config.invocation_params.args:
        if arg.startswith("-"):
            continue
        named = (root / arg.split("::")[0]).resolve()
        if named == file_path.resolve() or (
            named == file_path.parent.resolve() and named != root.resolve()
        ):
            return True
    return False


def _is_hypothesis(file_path: Path) -> bool:
    import yaml

    try:
        data = yaml.safe_load(file_path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, yaml.YAMLError):
        return True  # a broken hypothesis file is still collected, to report its error
    return isinstance(data, dict) and data.keys() >= _KEYS


def pytest_collect_file(parent: pytest.Collector, file_path: Path) -> HypothesisYaml | None:
    if file_path.suffix not in (".yaml", ".yml"):
        return None
    config = parent.config
    if not (config.getoption("falsify") or _named_on_command_line(config, file_path)):
        return None
    if not _is_hypothesis(file_path):
        return None
    return HypothesisYaml.from_parent(parent, path=file_path)


class HypothesisYaml(pytest.File):
    def collect(self) -> Iterator[HypothesisItem]:
        yield HypothesisItem.from_parent(self, name=self.path.stem)


class ClaimFalsified(AssertionError):
    """The hypothesis' verdict is FALSIFIED."""


class HypothesisItem(pytest.Item):
    def runtest(self) -> None:
        from falsify.api import load, run

        opt = self.config.getoption
        hf = load(self.path, seeds=opt("falsify_seeds"))
        outcome = run(
            hf,
            cache=opt("falsify_cache"),
            device=opt("falsify_device"),
            out=opt("falsify_out"),
        )
        self.user_properties.append(("verdict", outcome.verdict.value))
        verdict = outcome.verdict.value
        if verdict == "SUPPORTED":
            return
        if verdict == "INCONCLUSIVE":
            needed = [int(n) for n in outcome.parts["replicates_needed"].dropna() if n is not None]
            more = (
                f"about {max(needed)} replicates would likely decide it"
                if needed
                else "no feasible number of replicates is likely to decide it"
            )
            pytest.skip(f"INCONCLUSIVE with {_n(outcome)} replicates: {more}")
        raise ClaimFalsified(_summary(outcome, opt("falsify_out")))

    def repr_failure(self, excinfo: pytest.ExceptionInfo[BaseException], style: Any = None) -> str:
        from falsify.errors import FalsifyError

        if isinstance(excinfo.value, ClaimFalsified | FalsifyError):
            return str(excinfo.value)
        return super().repr_failure(excinfo)

    def reportinfo(self) -> tuple[Path, int | None, str]:
        return self.path, None, f"hypothesis {self.name}"


def _n(outcome: Any) -> int:
    return int(outcome.parts["n_replicates"].max())


def _summary(outcome: Any, out: str | None) -> str:
    from falsify.report.markdown import decision_rule

    hyp = outcome.file.hypothesis
    pred = hyp.prediction
    level = f"{100 * (1 - 2 * pred.alpha):g}%"
    lines = [f"FALSIFIED: {hyp.claim}"]
    for r in outcome.parts.itertuples():
        lines.append(
            f"  {r.part}: estimate {r.estimate:.3f}, {level} CI [{r.ci_low:.3f}, {r.ci_high:.3f}], "
            f"p (falsify, adjusted) {r.p_falsify_adj:.3g} -> {r.verdict}"
        )
    lines.append(f"  rule: {decision_rule(pred.direction, pred.sesoi, pred.alpha)}")
    report = f"; report: {Path(out) / (hyp.id + '.md')}" if out else ""
    lines.append(f"  {_n(outcome)} replicates{report}")
    return "\n".join(lines)
