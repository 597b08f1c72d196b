"""Imports: the packages form layers with no cycle; the CLI loads no heavy library; importing
the report changes no global state.

STYLE.md: "the file format at the bottom, then data, models, measures and interventions, stats,
shapes, runner, report, cli". Every import in ``falsify/`` counts, at module level or inside a
function (a function-level import is still a dependency; it only runs later).
"""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

# networkx comes with torch (one of torch's own dependencies), so it is always installed where
# falsify is; its cycle search names the whole cycle, which a hand-written DFS would duplicate.
import networkx as nx
import pytest

PACKAGE = Path(__file__).parents[1] / "falsify"

# Lowest first. An import may go down or stay within a layer, never up. Top-level modules are
# their own nodes.
LAYERS: list[set[str]] = [
    # used everywhere
    {"falsify.errors", "falsify._io", "falsify._imports", "falsify._lazy", "falsify._version"},
    {"falsify.hypothesis"},  # the file format and the kinds' registries
    # where units live and the math on them that models (regularizers) and measures share
    {"falsify.units", "falsify.hooks", "falsify.selectivity", "falsify.coclustering"},
    {"falsify.data"},
    {"falsify.models"},
    {"falsify.measures", "falsify.interventions"},
    {"falsify.stats"},
    {"falsify.shapes"},
    {"falsify.runner"},
    {"falsify.report"},
    {"falsify.cli", "falsify.api", "falsify.pytest_plugin"},
    {"falsify", "falsify.__main__"},  # the package's lazy re-exports, `python -m falsify`
]
RANK = {node: i for i, layer in enumerate(LAYERS) for node in layer}

# Cycles that exist today and are being removed on other branches; each pair allows only its
# upward edge (the lower package importing the higher one). Delete a pair when its cycle goes.
KNOWN_CYCLES: set[tuple[str, str]] = set()

# Upward imports that form no cycle but that the current code needs, with the reason.
LAYER_EXCEPTIONS: dict[tuple[str, str], str] = {}


def _module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _node(module: str) -> str:
    """``falsify.x.y.z`` -> ``falsify.x``: a sub-package, or a top-level module."""
    return ".".join(module.split(".")[:2])


def _imported(path: Path, modules: set[str]) -> set[str]:
    """Every falsify module ``path`` imports, anywhere in the file, relative imports resolved."""
    module = _module_name(path)
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")
                base = base[: len(base) - node.level + 1]
                target = ".".join([*base, *([node.module] if node.module else [])])
            else:
                target = node.module or ""
            if target == "falsify":  # `from falsify import errors` imports falsify.errors
                found.update(
                    f"falsify.{a.name}" if f"falsify.{a.name}" in modules else target
                    for a in node.names
                )
            else:
                found.add(target)
    return {m for m in found if m == "falsify" or m.startswith("falsify.")}


def _graph() -> nx.DiGraph:
    graph = nx.DiGraph()
    modules = {_module_name(p) for p in PACKAGE.rglob("*.py")}
    for path in sorted(PACKAGE.rglob("*.py")):
        src = _node(_module_name(path))
        graph.add_node(src)
        for target in _imported(path, modules):
            dst = _node(target)
            if dst != src:
                graph.add_edge(src, dst)
    return graph


def _edges(graph: nx.DiGraph) -> str:
    return "\n".join(f"  {a} -> {b}" for a, b in sorted(graph.edges))


def test_every_package_has_a_layer() -> None:
    missing = sorted(set(_graph().nodes) - RANK.keys())
    assert not missing, f"give these a place in LAYERS: {missing}"


def test_no_import_cycle_between_packages() -> None:
    graph = _graph()
    graph.remove_edges_from(KNOWN_CYCLES)
    cycles = sorted(" -> ".join([*c, c[0]]) for c in nx.simple_cycles(graph))
    assert not cycles, "import cycles between packages:\n" + "\n".join(cycles)


def test_imports_go_down_the_layers() -> None:
    graph = _graph()
    upward = {(a, b) for a, b in graph.edges if RANK[a] < RANK[b]}
    upward -= KNOWN_CYCLES | LAYER_EXCEPTIONS.keys()
    assert not upward, (
        "imports from a lower layer up to a higher one:\n"
        + "\n".join(f"  {a} -> {b}" for a, b in sorted(upward))
        + f"\nall edges:\n{_edges(graph)}"
    )


@pytest.mark.parametrize("pair", sorted(KNOWN_CYCLES | LAYER_EXCEPTIONS.keys()))
def test_allowed_upward_imports_are_still_there(pair: tuple[str, str]) -> None:
    """Keeps the allowlists honest: a removed import must leave them, or it could come back."""
    graph = _graph()
    lower, upper = pair
    assert RANK[lower] < RANK[upper]
    assert graph.has_edge(lower, upper), f"{lower} no longer imports {upper}: delete {pair}"


@pytest.mark.parametrize(
    ("statement", "heavy"),
    [
        (
            "import falsify.cli.main",
            ("torch", "matplotlib", "pandas", "statsmodels", "captum", "scipy", "mlflow"),
        ),
        # Validating a file builds the unions from every registered kind, whose modules hold
        # their torch implementations; the figures and captum still wait until first needed.
        (
            "import falsify; falsify.load('hypotheses/selectivity_predicts_importance.yaml')",
            ("matplotlib", "captum", "mlflow"),
        ),
    ],
)
def test_loads_no_heavy_library(statement: str, heavy: tuple[str, ...]) -> None:
    code = f"import sys; {statement}; print(sorted(m for m in {heavy!r} if m in sys.modules))"
    proc = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        check=True,
        cwd=PACKAGE.parent,
    )
    assert proc.stdout.strip() == "[]"


def test_report_modules_change_no_global_state(tmp_path: Path) -> None:
    """Importing the report loads no matplotlib (no backend chosen); drawing uses no pyplot."""
    code = f"""
import sys
import pandas as pd
import falsify.report, falsify.report.calibration, falsify.report.curves
import falsify.report.figures_between, falsify.report.figures_modularity
from falsify.report.figures import association_scatter
assert "matplotlib" not in sys.modules
tidy = pd.DataFrame({{"seed": [0, 0, 1], "layer": "h", "unit": [0, 1, 0], "x": [0.0, 1, 2],
                     "y": [1.0, 0, 2]}})
parts = pd.DataFrame({{"part": ["h"], "estimate": [0.1], "ci_low": [0.0], "ci_high": [0.2]}})
labels = {{"statistic": "r", "x": "x", "y": "y"}}
association_scatter(tidy, parts, labels, __import__("pathlib").Path({str(tmp_path / "a.png")!r}))
assert "matplotlib" in sys.modules and "matplotlib.pyplot" not in sys.modules
"""
    subprocess.run([sys.executable, "-c", code], check=True, cwd=PACKAGE.parent)
    assert (tmp_path / "a.png").read_bytes()[:4] == b"\x89PNG"
