"""Benchmark 3: the whole bundled suite, ``falsify run hypotheses/``, cold and warm.

Cold: an empty model cache, so every replicate is trained. Warm: the same cache again, so every
replicate is loaded and only measures, interventions, statistics and reports run. Each run is a
fresh ``python -m falsify run`` process (its start-up and imports are included), writing into a
temporary folder. ``--profile`` also runs one cold and one warm run in this process under
cProfile and prints the functions with the most cumulative time.

    PYTHONPATH=. python benchmarks/suite.py
"""

from __future__ import annotations

import argparse
import cProfile
import io
import os
import pstats
import resource
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

from benchmarks.common import Timing


def parse() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("path", nargs="?", default="hypotheses/")
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--device", default="auto")
    p.add_argument("--profile", action="store_true")
    p.add_argument("--top", type=int, default=25, help="rows of the profile to print")
    return p.parse_args()


def children_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def timed_runs(fn: Callable[[], None], repeats: int) -> Timing:
    """Wall time and the child processes' CPU time of ``repeats`` calls."""
    timing = Timing()
    for _ in range(repeats):
        start, cpu = time.perf_counter(), children_cpu()
        fn()
        timing.wall.append(time.perf_counter() - start)
        timing.cpu.append(children_cpu() - cpu)
    return timing


def run_cli(path: str, out: Path, cache: Path, device: str) -> None:
    cmd = [sys.executable, "-m", "falsify", "run", path, "--out", str(out)]
    cmd += ["--cache", str(cache), "--device", device, "--quiet"]
    env = {**os.environ, "PYTHONPATH": str(Path.cwd())}
    done = subprocess.run(cmd, env=env, capture_output=True, text=True, check=False)
    if done.returncode not in (0, 1):  # 1: a hypothesis was falsified, still a complete run
        raise SystemExit(f"falsify run failed ({done.returncode}):\n{done.stderr}")


def profile(path: str, cache: Path, out: Path, device: str, top: int) -> str:
    from falsify.cli.main import main as cli

    prof = cProfile.Profile()
    prof.enable()
    cli(["run", path, "--out", str(out), "--cache", str(cache), "--device", device, "--quiet"])
    prof.disable()
    buf = io.StringIO()
    pstats.Stats(prof, stream=buf).sort_stats("cumulative").print_stats(top)
    return buf.getvalue()


def main() -> None:
    args = parse()
    with tempfile.TemporaryDirectory(prefix="falsify-bench-") as tmp:
        root = Path(tmp)
        caches = iter(range(10**6))

        def cold() -> None:
            run_cli(args.path, root / "out", root / f"cold{next(caches)}", args.device)

        warm_cache = root / "warm"
        run_cli(args.path, root / "out", warm_cache, args.device)  # fills the warm cache

        def warm() -> None:
            run_cli(args.path, root / "out", warm_cache, args.device)

        t_cold = timed_runs(cold, args.repeats)
        t_warm = timed_runs(warm, args.repeats)
        files = sorted(p.name for p in (root / "out").rglob("*.md"))
        print(f"# bundled suite: falsify run {args.path} ({len(files)} Markdown reports)")
        rows: list[tuple[str, Timing]] = [("cold (empty cache)", t_cold), ("warm", t_warm)]
        for name, t in rows:
            print(f"{name:20s} {t.spread()}")
        print(f"cold / warm: {t_cold.median / t_warm.median:.1f}×")
        if args.profile:
            for label, cache in (("cold", root / "profiled"), ("warm", root / "profiled")):
                print(f"\n## profile of a {label} run\n")
                print(profile(args.path, cache, root / "out", args.device, args.top))


if __name__ == "__main__":
    main()
