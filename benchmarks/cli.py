"""Benchmark 4: how fast the command line answers, ``falsify --help`` and ``falsify list``.

Each command is a fresh process (``python -m falsify ...``), so start-up and imports count, as
they do for a user. The baseline, in the same run, is the interpreter starting and exiting
(``python -c pass``): the ratio says how much falsify adds on top. Targets (issue 15): help
under 0.5 s, listing the bundled folder under 1 s.

    PYTHONPATH=. python benchmarks/cli.py
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
from pathlib import Path

from benchmarks.common import Timing

COMMANDS: dict[str, tuple[list[str], float | None]] = {
    "python -c pass (baseline)": (["-c", "pass"], None),
    "falsify --help": (["-m", "falsify", "--help"], 0.5),
    "falsify list hypotheses/": (["-m", "falsify", "list", "hypotheses/"], 1.0),
    "falsify --version": (["-m", "falsify", "--version"], None),
}


def timed_process(args: list[str], repeats: int) -> Timing:
    """Wall and CPU (user + system) seconds of ``repeats`` fresh processes."""
    timing = Timing()
    env = {**os.environ, "PYTHONPATH": str(Path.cwd())}
    for _ in range(repeats):
        before = os.times()
        done = subprocess.run([sys.executable, *args], env=env, capture_output=True, check=False)
        after = os.times()
        if done.returncode != 0:
            raise SystemExit(f"{args} failed ({done.returncode}):\n{done.stderr.decode()}")
        timing.wall.append(after.elapsed - before.elapsed)
        timing.cpu.append(
            after.children_user
            - before.children_user
            + after.children_system
            - before.children_system
        )
    return timing


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--repeats", type=int, default=10)
    args = p.parse_args()
    timed_process(COMMANDS["falsify --help"][0], 1)  # warm the file cache and .pyc files
    base = None
    for name, (argv, target) in COMMANDS.items():
        t = timed_process(argv, args.repeats)
        base = base or t.median
        verdict = (
            ""
            if target is None
            else f"  target < {target} s: {'met' if t.median < target else 'MISSED'}"
        )
        print(f"{name:28s} {t.spread()}  {t.median / base:5.1f}x baseline{verdict}")


if __name__ == "__main__":
    main()
