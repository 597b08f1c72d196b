"""Third-party kinds through entry points, validated exactly like built-ins (docs/extending.md).

The plugin package under ``tests/plugins/falsify_example_plugin`` is installed (a real wheel
install, into a temporary folder) and a hypothesis file that uses its measure runs end to end
from the CLI in a fresh process that sees that folder.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import ClassVar, Literal

import pytest

from falsify.errors import FalsifyError
from falsify.hypothesis.kinds import UNIT_MEASURES, Registry, UnitMeasureKind

PLUGIN = Path(__file__).parent / "plugins" / "falsify_example_plugin"

FILE = """\
id: plugin_measure
claim: Units that fire more often matter more under ablation.
population:
  data: {kind: digits}
  model: {kind: mlp, hidden: [16]}
  training: {epochs: 3, batch_size: 128, lr: 0.01}
  seeds: 3
test:
  kind: association
  layers: [hidden1]
  x: {kind: activation_rate, threshold: 0.0}
  y: {kind: unit_ablation, metric: loss_increase}
prediction:
  direction: positive
  sesoi: 0.1
"""


@pytest.fixture(scope="module")
def installed(tmp_path_factory: pytest.TempPathFactory) -> Path:
    target = tmp_path_factory.mktemp("site")
    subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "install",
            "-q",
            "--no-deps",
            "--no-build-isolation",
            "--no-index",
            "--target",
            str(target),
            str(PLUGIN),
        ],
        check=True,
        capture_output=True,
    )
    return target


def _falsify(site: Path, *args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(site), *sys.path])}
    return subprocess.run(
        [sys.executable, "-m", "falsify", *args], capture_output=True, text=True, env=env, cwd=cwd
    )


@pytest.mark.slow
def test_a_plugin_measure_runs_end_to_end(installed: Path, tmp_path: Path) -> None:
    path = tmp_path / "plugin.yaml"
    path.write_text(FILE)
    proc = _falsify(
        installed,
        "run",
        str(path),
        "--out",
        str(tmp_path / "reports"),
        "--cache",
        str(tmp_path / "cache"),
        "--quiet",
        cwd=tmp_path,
    )
    assert proc.returncode in (0, 1), proc.stderr
    report = (tmp_path / "reports" / "plugin_measure.md").read_text()
    assert "activation rate" in report  # the plugin's own label names the x axis
    tidy = (tmp_path / "reports" / "plugin_measure.csv").read_text().splitlines()
    assert len(tidy) == 1 + 3 * 16  # replicate × unit


def _run(site: Path, tmp_path: Path, text: str, name: str) -> subprocess.CompletedProcess[str]:
    path = tmp_path / f"{name}.yaml"
    path.write_text(text)
    out, cache = tmp_path / "reports", tmp_path / "cache"
    return _falsify(
        site, "run", str(path), "--out", str(out), "--cache", str(cache), "--quiet", cwd=tmp_path
    )


@pytest.mark.slow
def test_a_plugin_architecture_with_units_on_the_last_axis(installed: Path, tmp_path: Path) -> None:
    # digits' 64 inputs as 8 tokens of 8; the mix layer is [batch, 8 tokens, 12 channels]
    text = FILE.replace("{kind: mlp, hidden: [16]}", "{kind: token_mixer, tokens: 8, width: 12}")
    text = text.replace("layers: [hidden1]", "layers: [mix]").replace(
        "x: {kind: activation_rate, threshold: 0.0}", "x: {kind: class_selectivity}"
    )
    proc = _run(installed, tmp_path, text, "plugin_measure")
    assert proc.returncode in (0, 1), proc.stderr
    tidy = (tmp_path / "reports" / "plugin_measure.csv").read_text().splitlines()
    assert len(tidy) == 1 + 3 * 12  # the 12 channels are the units, not the 8 positions


@pytest.mark.slow
def test_a_plugin_shape_runs_on_the_shared_pipeline(installed: Path, tmp_path: Path) -> None:
    head, _, _ = FILE.partition("test:\n")
    text = (
        head
        + "test:\n  kind: mean_unit_effect\n  layers: [hidden1]\n"
        + "  y: {kind: unit_ablation}\nprediction: {direction: positive, sesoi: 0.01}\n"
    )
    proc = _run(installed, tmp_path, text, "plugin_measure")
    assert proc.returncode in (0, 1), proc.stderr
    assert (tmp_path / "reports" / "plugin_measure.png").is_file()
    parts = (tmp_path / "reports" / "plugin_measure.parts.csv").read_text()
    assert "hidden1" in parts
    report = (tmp_path / "reports" / "plugin_measure.md").read_text()
    assert "mean accuracy drop when ablated" in report


def test_a_plugin_field_is_validated_like_a_builtin(installed: Path, tmp_path: Path) -> None:
    path = tmp_path / "plugin.yaml"
    path.write_text(FILE.replace("threshold: 0.0", "threshold: -1"))
    proc = _falsify(installed, "check", str(path), "--cache", str(tmp_path / "c"), cwd=tmp_path)
    assert proc.returncode != 0
    line = proc.stderr.strip()
    assert "\n" not in line and "Traceback" not in line
    assert "'test.x.threshold'" in line and "(line 11)" in line


def test_without_the_plugin_its_kind_is_unknown(tmp_path: Path) -> None:
    assert "activation_rate" not in list(UNIT_MEASURES)
    path = tmp_path / "plugin.yaml"
    path.write_text(FILE)
    proc = subprocess.run(
        [sys.executable, "-m", "falsify", "check", str(path), "--cache", str(tmp_path / "c")],
        capture_output=True,
        text=True,
        cwd=tmp_path,
    )
    assert proc.returncode != 0
    assert "'test.x.kind'" in proc.stderr and "class_selectivity" in proc.stderr


def test_a_kind_without_a_label_is_refused() -> None:
    class Unlabelled(UnitMeasureKind):
        kind: Literal["unlabelled"]
        docs: ClassVar[str] = "README.md"

    with pytest.raises(FalsifyError, match="must declare a non-empty label"):
        Registry("unit_measures", UnitMeasureKind).add(Unlabelled)


def test_two_kinds_with_one_name_are_refused() -> None:
    registry = Registry("unit_measures", UnitMeasureKind)

    def make() -> type[UnitMeasureKind]:
        class Twin(UnitMeasureKind):
            kind: Literal["twin"]
            label: ClassVar[str] = "twin"
            docs: ClassVar[str] = "README.md"

        return Twin

    registry.add(make())
    with pytest.raises(FalsifyError, match="Two unit_measures kinds are named 'twin'"):
        registry.add(make())


def test_falsify_kinds_lists_the_plugin_kinds(installed: Path, tmp_path: Path) -> None:
    listed = _falsify(installed, "kinds", cwd=tmp_path).stdout
    for row in (
        "| unit_measures | `activation_rate` | activation rate | `falsify_example` |",
        "| architectures | `token_mixer` |",
        "| shapes | `mean_unit_effect` |",
    ):
        assert row in listed
    builtin = _falsify(installed, "kinds", "--builtin", cwd=tmp_path).stdout
    assert "activation_rate" not in builtin and "`class_selectivity`" in builtin


def test_a_plugin_shape_gets_fields_and_a_starter_that_passes_check(
    installed: Path, tmp_path: Path
) -> None:
    proc = _falsify(installed, "kinds", "unit_measures", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert "kind: activation_rate" in proc.stdout and "threshold: float" in proc.stdout
    made = _falsify(installed, "new", "mean_unit_effect", "starter.yaml", cwd=tmp_path)
    assert made.returncode == 0, made.stderr
    proc = _falsify(installed, "check", "starter.yaml", "--cache", "c", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert "ok  starter.yaml: my_mean_unit_effect (mean_unit_effect)" in proc.stdout
