"""The ``falsify`` command line: run, replicate, check and list hypothesis files.

The runner, the report, torch, pandas, statsmodels and matplotlib are imported inside the
commands that need them, so ``--help`` and ``list`` answer at once.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
import warnings
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, TypeVar

from falsify._version import __version__
from falsify.api import DEFAULT_MAX_HOURS
from falsify.cli.listing import read_listing
from falsify.errors import FalsifyDeprecationWarning, FalsifyError, truncate
from falsify.hypothesis.loader import HypothesisFile, discover, load
from falsify.hypothesis.lock import DEFAULT_LOCK, lock_files
from falsify.runner.device import DEVICES
from falsify.runner.executors import EXECUTORS, RAY_INSTALL_HINT, make_executor

if TYPE_CHECKING:
    from falsify.runner import Outcome
    from falsify.runner.executors import Executor

__all__ = ["main"]

T = TypeVar("T")

_DESCRIPTION = """\
Turn interpretability claims into experiments that can come out against the claim.

A hypothesis file (YAML) names a population of trained models, an intervention, a measure, a
statistical test whose replicate is the trained model, and a prediction with a smallest effect
size of interest. `falsify run` trains or loads the models, runs the test and writes a Markdown
report with the verdict: SUPPORTED, FALSIFIED or INCONCLUSIVE.
"""

_EPILOG = """\
examples:
  falsify run hypotheses/                       run every bundled hypothesis, write reports/
  falsify run hypotheses/x.yaml --seeds 3       a quick look with 3 replicates
  falsify run x.yaml --set population.training.epochs=5
  falsify replicate hypotheses/                 rerun each on fresh seeds, compare the verdicts
  falsify check hypotheses/                     validate without running
  falsify list hypotheses/                      id, shape and claim of each file
  falsify kinds shapes                          each test shape, its fields and defaults
  falsify new association my_claim.yaml         a commented starter file that passes check
  falsify schema > hypothesis.schema.json       the file format, for an editor
  falsify lock hypotheses/                      pre-register: record what each verdict depends on
  falsify calibrate                             the verdict rules on simulated data, known truth
"""


def _add_file_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("paths", nargs="+", metavar="PATH", help="hypothesis files or folders")
    p.add_argument(
        "--only",
        metavar="ID",
        action="append",
        help="only the hypothesis with this id (repeatable)",
    )
    p.add_argument(
        "--seeds",
        type=int,
        metavar="N",
        help="override the number of replicates (seeds 0..N-1; a run marks it in the report)",
    )
    p.add_argument(
        "--set",
        dest="overrides",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="override one field, e.g. population.training.epochs=5 (repeatable; a run marks "
        "it in the report)",
    )
    p.add_argument(
        "--cache",
        type=Path,
        default=Path(".falsify"),
        help="model cache folder (default: .falsify)",
    )
    p.add_argument(
        "--device",
        choices=DEVICES,
        default="auto",
        help="where to train and evaluate (default: auto)",
    )


def _add_run_options(p: argparse.ArgumentParser) -> None:
    """The options of commands that train and write reports (``run``, ``replicate``)."""
    p.add_argument(
        "--out", type=Path, default=Path("reports"), help="report folder (default: reports)"
    )
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    p.add_argument(
        "--jobs",
        type=int,
        default=1,
        metavar="N",
        help="train up to N replicates at once (a process pool; GPUs shared round-robin)",
    )
    p.add_argument(
        "--executor",
        choices=EXECUTORS,
        default="local",
        help=f"where jobs run: this machine, or a Ray cluster ({RAY_INSTALL_HINT})",
    )
    p.add_argument(
        "--address",
        metavar="HOST:PORT",
        help="join this existing Ray cluster (with --executor ray)",
    )
    p.add_argument(
        "--max-hours",
        type=float,
        default=DEFAULT_MAX_HOURS,
        metavar="H",
        help="refuse a file whose training `falsify check` estimates at more than H hours "
        f"(default: {DEFAULT_MAX_HOURS:g})",
    )
    p.add_argument(
        "--lock",
        type=Path,
        default=DEFAULT_LOCK,
        help=f"lock file the reports check pre-registration against (default: {DEFAULT_LOCK})",
    )


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="falsify",
        description=_DESCRIPTION,
        epilog=_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--version", action="version", version=f"falsify {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    run = sub.add_parser(
        "run",
        help="train or load the models, test each hypothesis, write reports",
        description="Train or load each population (cached), run its test, and write "
        "reports/<id>.md, a PNG figure, a tidy CSV and reports/index.md. Exits 1 if any file "
        "failed; the others still run and an earlier report is never overwritten by a failed run.",
    )
    _add_file_options(run)
    _add_run_options(run)
    run.add_argument(
        "--mlflow",
        metavar="DIR",
        default=os.environ.get("FALSIFY_MLFLOW") or None,
        help="also log each run to this MLflow tracking folder (or URI): the file's fields, "
        "the verdict, each part's estimate and CI, the report files (default: $FALSIFY_MLFLOW; "
        "pip install 'falsify-interp[mlflow]')",
    )

    rep = sub.add_parser(
        "replicate",
        help="rerun each hypothesis on fresh seeds and compare with its run",
        description="Run each file as `falsify run` does, then rerun it on a fresh, disjoint "
        "set of seeds (each seed plus --seed-offset), and write <id>.replication.md: both "
        "runs' verdicts, estimates and CIs side by side and whether the replication agrees "
        "(docs/verdicts.md, Replication), with replications.md for the whole --out folder. "
        "Exits 1 if any file failed, otherwise 4 if any replication confidently contradicts "
        "its run (SUPPORTED in one, FALSIFIED in the other), otherwise 0.",
    )
    _add_file_options(rep)
    rep.add_argument(
        "--seed-offset",
        type=int,
        metavar="N",
        help="replicate on every seed plus N (default: the smallest multiple of 1000 above "
        "every seed, so seeds 0..9 replicate on 1000..1009); must give disjoint seeds",
    )
    _add_run_options(rep)

    lock = sub.add_parser(
        "lock",
        help="pre-register hypotheses: record what their verdicts depend on",
        description="Record, for each hypothesis, a hash of everything its verdict depends on "
        "(population, test, decision rule, SESOI, α) in a lock file, before any result exists. "
        "Reports then say PRE-REGISTERED, CHANGED AFTER LOCK (listing each changed field), "
        "LOCKED AFTER RESULTS or NOT LOCKED. Editing comments or the claim's wording does not "
        "change the lock.",
    )
    lock.add_argument("paths", nargs="+", metavar="PATH", help="hypothesis files or folders")
    lock.add_argument(
        "--lock", type=Path, default=DEFAULT_LOCK, help=f"lock file (default: {DEFAULT_LOCK})"
    )
    lock.add_argument(
        "--out",
        type=Path,
        default=Path("reports"),
        help="report folder, to detect results that already exist (default: reports)",
    )

    check = sub.add_parser(
        "check",
        help="validate hypothesis files without running them",
        description="Validate each file (schema, layer names against the real model) and say "
        "what a run would do: replicates to train, how many are cached, and roughly how long "
        "training will take on this machine (a timing probe of a few training steps).",
    )
    _add_file_options(check)
    check.add_argument(
        "--no-estimate",
        action="store_true",
        help="validate and count cached replicates only, without the timing probe",
    )

    cal = sub.add_parser(
        "calibrate",
        help="check the verdict rules on simulated data with known truth",
        description="Simulate studies with a known true effect for every test shape at the "
        "replicate counts users run, decide each with the product's own statistics, and print "
        "the false-support rate under a true null, the false-falsification rate at the SESOI "
        "and power. Writes calibration.md and calibration.png to --out.",
    )
    cal.add_argument(
        "--sims", type=int, default=1000, help="simulated studies per cell (default: 1000)"
    )
    cal.add_argument(
        "--replicates",
        type=lambda s: [int(v) for v in s.split(",")],
        default=[3, 5, 10, 20],
        metavar="K,K,...",
        help="replicate counts to simulate (default: 3,5,10,20)",
    )
    cal.add_argument(
        "--alpha", type=float, default=0.05, help="α of the simulated claims (default: 0.05)"
    )
    cal.add_argument(
        "--out", type=Path, default=Path("reports"), help="report folder (default: reports)"
    )

    lst = sub.add_parser(
        "list",
        help="list hypotheses: id, shape, claim",
        description="List each hypothesis file's id, test shape and claim. Only those fields "
        "are read, so it answers at once; `falsify check` validates the whole file.",
    )
    lst.add_argument("paths", nargs="+", metavar="PATH", help="hypothesis files or folders")

    kinds = sub.add_parser(
        "kinds",
        help="list every kind a file can name (built-in and installed plugins)",
        description="Print a Markdown table of every registered kind, by slot: its name, "
        "label, module, docs page and capabilities, plugins installed through entry points "
        "included (docs/extending.md).",
    )
    kinds.add_argument(
        "slot", nargs="?", metavar="SLOT", help="only this slot, with its kinds' fields"
    )
    kinds.add_argument(
        "--fields",
        action="store_true",
        help="each kind's one-line description and its fields with types and defaults",
    )
    kinds.add_argument(
        "--builtin", action="store_true", help="only falsify's own kinds (docs/kinds.md)"
    )

    new = sub.add_parser(
        "new",
        help="write a commented starter hypothesis file for a test shape",
        description="Write a starter hypothesis file for SHAPE (see `falsify kinds shapes`) "
        "on the bundled digits data and a small MLP, with every field commented. It passes "
        "`falsify check` as written; edit the claim, the test and the prediction.",
    )
    new.add_argument("shape", metavar="SHAPE", help="a test shape, e.g. association")
    new.add_argument(
        "path", nargs="?", type=Path, metavar="PATH", help="file to write (default: SHAPE.yaml)"
    )
    sub.add_parser(
        "schema",
        help="print the JSON Schema of a hypothesis file (for editors)",
        description="Print the JSON Schema of a hypothesis file, generated from the file "
        "format's models with every registered kind, plugins included. Editors with the YAML "
        "language server use it to complete and check fields (docs/editors.md).",
    )
    return parser


def _error(message: object) -> None:
    """Print a user-facing error; every line carries the prefix, so it greps as one.

    A line is cut at 1,000 characters: values are quoted truncated where errors are made, and
    this is the net for a message that quotes a structure whole (a 20,000-value list of k)."""
    for line in str(message).splitlines():
        print(f"error: {truncate(line, 1000)}", file=sys.stderr)


def _read_all(
    args: argparse.Namespace, read: Callable[[Path], T], id_of: Callable[[T], str]
) -> tuple[list[T], list[str]]:
    """Read every file; return the good ones (unique ids, ``--only``) and one error per bad one."""
    only = getattr(args, "only", None)
    read_ok: list[tuple[Path, T]] = []
    errors: list[str] = []
    for path in discover(args.paths):
        try:
            item = read(path)
        except FalsifyError as exc:
            errors.append(str(exc))
            continue
        if only and id_of(item) not in only:
            continue
        read_ok.append((path, item))
    by_id: dict[str, list[Path]] = {}
    for path, item in read_ok:
        by_id.setdefault(id_of(item), []).append(path)
    for ident, paths in by_id.items():
        for path in paths if len(paths) > 1 else []:
            others = ", ".join(str(p) for p in paths if p != path)
            errors.append(
                f"The 'id' of {path} must be unique (it names the report). Got {ident!r} "
                f"instead, which {others} uses too."
            )
    items = [item for _, item in read_ok if len(by_id[id_of(item)]) == 1]
    if only:
        found = {id_of(item) for item in items}
        for missing in sorted(set(only) - found):
            errors.append(f"--only {missing!r}: no hypothesis with that id in {args.paths}.")
    return items, errors


def _load_all(args: argparse.Namespace) -> tuple[list[HypothesisFile], list[str]]:
    """Load and validate every file (with ``--seeds`` and ``--set`` applied)."""
    overrides = list(getattr(args, "overrides", []) or [])
    if getattr(args, "seeds", None) is not None:
        overrides.append(f"population.seeds={args.seeds}")

    def read(path: Path) -> HypothesisFile:
        # A deprecated field name is one note line per file, not a Python warning.
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always", FalsifyDeprecationWarning)
            hf = load(path, overrides)
        for w in caught:
            if issubclass(w.category, FalsifyDeprecationWarning):
                print(f"note: {w.message}", file=sys.stderr)
            else:  # other warnings go on as they came
                warnings.warn_explicit(w.message, w.category, w.filename, w.lineno)
        return hf

    return _read_all(args, read, lambda hf: hf.hypothesis.id)


def _cmd_kinds(args: argparse.Namespace) -> int:
    from falsify.report.kinds import kinds_fields, kinds_markdown

    if args.fields or args.slot:
        print(kinds_fields(args.slot, builtin_only=args.builtin), end="")
    else:
        print(kinds_markdown(builtin_only=args.builtin), end="")
    return 0


def _cmd_new(args: argparse.Namespace) -> int:
    from falsify.cli.starter import write_starter

    print(f"wrote {write_starter(args.shape, args.path)}")
    return 0


def _cmd_schema(args: argparse.Namespace) -> int:
    from falsify.hypothesis.file_schema import render

    print(render(), end="")
    return 0


def _cmd_list(args: argparse.Namespace) -> int:
    listings, errors = _read_all(args, read_listing, lambda entry: entry.id)
    for entry in listings:
        print(f"{entry.id}\t{entry.shape}\t{entry.claim}")
    for e in errors:
        _error(e)
    return 1 if errors else 0


def _cmd_check(args: argparse.Namespace) -> int:
    from falsify.runner import ModelCache, plan, resolve_device
    from falsify.runner.estimate import format_duration

    device = resolve_device(args.device)
    cache = ModelCache(args.cache)
    files, errors = _load_all(args)
    for hf in files:
        try:
            p = plan(hf, cache, device, estimate=not args.no_estimate)
        except FalsifyError as exc:
            errors.append(str(exc))
            continue
        h = hf.hypothesis
        print(
            f"ok  {hf.path}: {h.id} ({h.test.kind}); {p.n_replicates} replicates, "
            f"{p.n_cached} cached, {p.n_replicates - p.n_cached} to train on {device}"
            + (f", about {format_duration(p.seconds)}" if p.seconds > 0 else "")
        )
    for e in errors:
        _error(e)
    return 1 if errors else 0


def _cmd_calibrate(args: argparse.Namespace) -> int:
    from falsify.report.calibration import format_parts_table, format_table, write_calibration
    from falsify.stats.calibration import SIMULATORS, calibrate
    from falsify.stats.calibration_parts import RULES, calibrate_parts

    if args.sims < 10 or not 0 < args.alpha < 0.5 or min(args.replicates) < 2:
        raise FalsifyError(
            "calibrate needs --sims ≥ 10, 0 < --alpha < 0.5 and replicate counts ≥ 2. "
            f"Got --sims {args.sims}, --alpha {args.alpha}, --replicates {args.replicates}."
        )
    table = calibrate(SIMULATORS, args.replicates, args.sims, args.alpha)
    parts = calibrate_parts(replicates=args.replicates, n_sims=args.sims, alpha=args.alpha)
    print(format_table(table))
    print()
    print(format_parts_table(parts))
    print(f"wrote {write_calibration(table, SIMULATORS, args.out, parts)}")
    required = table["offered"] & ~table["stress"] & ~table["approximate"]
    ok = table.loc[required, "calibrated"].all()
    return 0 if ok and parts.loc[parts["rule"] == RULES[0], "calibrated"].all() else 1


def _cmd_lock(args: argparse.Namespace) -> int:
    from falsify.report import first_result_at

    files, errors = _load_all(args)
    for e in errors:
        _error(e)
    firsts = {hf.hypothesis.id: first_result_at(args.out, hf.hypothesis.id) for hf in files}
    for line in lock_files(files, args.lock, firsts):
        print(line)
    print(f"wrote {args.lock}")
    return 1 if errors else 0


def _attempt(hf: HypothesisFile, call: Callable[[], T]) -> T | None:
    """``call()``, or None once its error is printed: one failed file does not stop the rest."""
    try:
        return call()
    except FalsifyError as exc:
        _error(exc)
    except Exception as exc:  # a bug, not bad input: keep going with the other files
        if os.environ.get("FALSIFY_DEBUG"):
            raise
        _error(
            f"{hf.path}: internal error {type(exc).__name__}: {exc} (a bug in falsify; "
            "rerun with FALSIFY_DEBUG=1 for the traceback and please report it)"
        )
    return None


def _deciding_part(outcome: Outcome) -> str:
    """The first part whose verdict is the overall verdict (the first part if none is)."""
    deciding = outcome.parts[outcome.parts["verdict"] == outcome.verdict.value]
    return str((deciding if len(deciding) else outcome.parts).iloc[0].part)


def _headline(outcome: Outcome, part: str | None = None) -> str:
    """``part estimate [low, high] (n parts)`` of ``part`` (default: :func:`_deciding_part`)."""
    table = outcome.parts
    part = _deciding_part(outcome) if part is None else part
    best = table[table["part"] == part].iloc[0]
    parts = f" ({len(table)} parts)" if len(table) > 1 else ""
    return f"{best.part} {best.estimate:.3f} [{best.ci_low:.3f}, {best.ci_high:.3f}]{parts}"


@contextmanager
def _training(args: argparse.Namespace) -> Iterator[Executor | None]:
    """The checks of a command that trains, before any file is read; its executor, closed after
    the last file (a Ray instance it started is shut down, a cluster it joined left running)."""
    from falsify.runner import resolve_device

    resolve_device(args.device)  # a device that is not there is one error, not one per file
    if getattr(args, "mlflow", None):
        from falsify.report.tracking import require_mlflow

        require_mlflow()  # a missing package is one error, before anything trains
    executor = make_executor(args.executor, args.jobs, args.address)
    try:
        yield executor
    finally:
        if executor is not None:
            executor.close()


def _cmd_run(args: argparse.Namespace) -> int:
    from falsify.api import run

    with _training(args) as executor:
        files, errors = _load_all(args)
        for e in errors:
            _error(e)
        failed = len(errors)
        for hf in files:
            start = time.perf_counter()
            outcome = _attempt(
                hf,
                lambda hf=hf: run(
                    hf,
                    cache=args.cache,
                    device=args.device,
                    executor=executor,
                    out=args.out,
                    lock=args.lock,
                    progress=not args.quiet,
                    mlflow=args.mlflow,
                    max_hours=args.max_hours,
                ),
            )
            if outcome is None:
                failed += 1
                continue
            print(
                f"{outcome.verdict.value:<12} {hf.hypothesis.id}: {_headline(outcome)}, "
                f"{outcome.provenance['replicates']} replicates "
                f"({outcome.provenance['cache_hits']} cached), {time.perf_counter() - start:.1f} s "
                f"-> {args.out / f'{hf.hypothesis.id}.md'}"
            )
        return 1 if failed else 0


# `falsify replicate`'s status when every file ran and some replication contradicts its run.
CONTRADICTED = 4


def _cmd_replicate(args: argparse.Namespace) -> int:
    from falsify.api import replicate

    with _training(args) as executor:
        files, errors = _load_all(args)
        for e in errors:
            _error(e)
        failed, contradicted = len(errors), 0
        for hf in files:
            start = time.perf_counter()
            result = _attempt(
                hf,
                lambda hf=hf: replicate(
                    hf,
                    seed_offset=args.seed_offset,
                    cache=args.cache,
                    device=args.device,
                    executor=executor,
                    out=args.out,
                    lock=args.lock,
                    progress=not args.quiet,
                    max_hours=args.max_hours,
                ),
            )
            if result is None:
                failed += 1
                continue
            contradicted += result.contradicts
            o, r = result.original, result.replication
            models = o.provenance["replicates"] + r.provenance["replicates"]
            cached = o.provenance["cache_hits"] + r.provenance["cache_hits"]
            print(
                f"{result.agreement:<16} {hf.hypothesis.id}: {o.verdict.value} {_headline(o)} -> "
                f"{r.verdict.value} {_headline(r, _deciding_part(o))} "
                f"(seeds +{result.offset}), {models} replicates "
                f"({cached} cached), {time.perf_counter() - start:.1f} s "
                f"-> {args.out / f'{hf.hypothesis.id}.replication.md'}"
            )
        if failed:
            return 1
        return CONTRADICTED if contradicted else 0


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    commands = {
        "run": _cmd_run,
        "replicate": _cmd_replicate,
        "check": _cmd_check,
        "list": _cmd_list,
        "lock": _cmd_lock,
        "calibrate": _cmd_calibrate,
        "kinds": _cmd_kinds,
        "schema": _cmd_schema,
        "new": _cmd_new,
    }
    try:
        status = commands[args.command](args)
        sys.stdout.flush()  # here, so a closed pipe is met by the handler below, not at exit
        return status
    except FalsifyError as exc:
        _error(exc)
        return 2
    except KeyboardInterrupt:
        print("interrupted: finished replicates are cached; rerun to resume.", file=sys.stderr)
        return 130
    except BrokenPipeError:  # `falsify list … | head`: the reader left; not an error of ours
        # what is still buffered goes to the null device when the interpreter flushes at exit
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 141  # 128 + SIGPIPE, what a shell reports for a killed writer
    except Exception as exc:  # a bug, not bad input: one line, the traceback on request
        if os.environ.get("FALSIFY_DEBUG"):
            raise
        _error(
            f"internal error {type(exc).__name__}: {exc} (a bug in falsify; rerun with "
            "FALSIFY_DEBUG=1 for the traceback and please report it)"
        )
        return 3


if __name__ == "__main__":
    sys.exit(main())
