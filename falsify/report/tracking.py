"""Logging a hypothesis run to MLflow (docs/reports.md, "Experiment trackers").

One MLflow run per hypothesis run, in the experiment ``falsify``: every field of the file (as
run, overrides applied) as a parameter, the verdict (+1 SUPPORTED, 0 INCONCLUSIVE, −1
FALSIFIED) and each part's estimate, CI, adjusted p-value and standardized effect as metrics,
the provenance as tags, and the report, its CSVs and figures as artifacts. A folder is a local
tracking store (``mlflow.db`` and ``artifacts/`` inside it); anything with a scheme
(``sqlite:///…``, ``http://…``) is used as the tracking URI as it is.
"""

from __future__ import annotations

import logging
import math
import re
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from falsify.errors import FalsifyError
from falsify.runner.outcome import Outcome
from falsify.stats.verdict import Verdict

__all__ = [
    "EXPERIMENT",
    "VERDICT_METRIC",
    "artifact_names",
    "log_run",
    "require_mlflow",
    "tracking_uri",
]

EXPERIMENT = "falsify"
VERDICT_METRIC = {Verdict.SUPPORTED: 1.0, Verdict.INCONCLUSIVE: 0.0, Verdict.FALSIFIED: -1.0}
_PART_METRICS = ("estimate", "ci_low", "ci_high", "p_support_adj", "p_falsify_adj", "effect_size")
_BATCH = 100  # MLflow's limit of params or tags per logging call
_KEY = re.compile(r"[^\w\-. :/]")  # what MLflow allows in a key
_URI = re.compile(r"^[A-Za-z][A-Za-z0-9+.-]+:")


def require_mlflow() -> Any:
    """The ``mlflow`` module, or the one-line error saying how to install it."""
    try:
        import mlflow
    except ImportError:
        raise FalsifyError(
            "Logging to MLflow needs the mlflow package. Got it missing: install it with "
            "`pip install 'falsify-interp[mlflow]'`."
        ) from None
    return mlflow


def _folder(target: str | Path) -> Path | None:
    """The local tracking folder ``target`` names; None for a URI (``scheme:…``, two or more
    letters, so a Windows drive is a folder)."""
    text = str(target)
    return None if _URI.match(text) else Path(text).expanduser().resolve()


def tracking_uri(target: str | Path) -> str:
    """A folder -> its local SQLite store (the folder is created); a URI -> itself."""
    folder = _folder(target)
    if folder is None:
        return str(target)
    folder.mkdir(parents=True, exist_ok=True)
    return f"sqlite:///{folder / 'mlflow.db'}"


def _flat(prefix: str, value: Any) -> Iterator[tuple[str, str]]:
    if isinstance(value, dict) and value:
        for k, v in value.items():
            yield from _flat(f"{prefix}.{k}" if prefix else str(k), v)
    else:
        yield prefix, str(value)


def _key(text: str) -> str:
    return _KEY.sub("_", text)


@contextmanager
def _quiet_migrations() -> Iterator[None]:
    """A new store's schema migrations log at INFO; a run's output stays one line per file."""
    loggers = [logging.getLogger(n) for n in ("alembic", "mlflow.store.db.utils")]
    levels = [lg.level for lg in loggers]
    for lg in loggers:
        lg.setLevel(logging.WARNING)
    try:
        yield
    finally:
        for lg, level in zip(loggers, levels, strict=True):
            lg.setLevel(level)


def artifact_names(o: Outcome) -> list[str]:
    """The files ``write_outcome`` wrote for ``o``: report, tidy and parts CSVs, record, figures."""
    hid = o.file.hypothesis.id
    names = [f"{hid}.md", f"{hid}.csv", f"{hid}.parts.csv", f"{hid}.json"]
    return names + [f"{hid}{suffix}.png" for suffix in o.figures]


def log_run(o: Outcome, report_dir: Path, target: str | Path) -> str:
    """Log ``o`` (its files written in ``report_dir``) to the MLflow store at ``target``;
    return the MLflow run id."""
    require_mlflow()
    from mlflow.entities import Metric, Param
    from mlflow.tracking import MlflowClient

    uri = tracking_uri(target)
    with _quiet_migrations():
        client = MlflowClient(tracking_uri=uri)
        experiment = client.get_experiment_by_name(EXPERIMENT)
        if experiment is None:
            folder = _folder(target)
            location = None if folder is None else (folder / "artifacts").as_uri()
            experiment_id = client.create_experiment(EXPERIMENT, artifact_location=location)
        else:
            experiment_id = experiment.experiment_id
    hyp = o.file.hypothesis
    prov = o.provenance
    tags = {"verdict": o.verdict.value, "hypothesis_id": hyp.id, "shape": hyp.test.kind}
    tags |= {f"provenance.{k}": v for k, v in _flat("", prov) if not k.startswith("cache_keys")}
    if o.preregistration is not None:
        tags["preregistration"] = o.preregistration.status
    run = client.create_run(
        experiment_id, run_name=hyp.id, tags={_key(k): v[:8000] for k, v in tags.items()}
    )
    run_id = run.info.run_id
    try:
        params = [Param(_key(k), v[:6000]) for k, v in _flat("", hyp.model_dump(mode="json"))]
        for i in range(0, len(params), _BATCH):
            client.log_batch(run_id, params=params[i : i + _BATCH])
        stamp = int(1000 * time.time())
        metrics = [Metric("verdict", VERDICT_METRIC[o.verdict], stamp, 0)]
        for row in o.parts.to_dict("records"):
            for name in _PART_METRICS:
                value = row.get(name)
                if isinstance(value, int | float) and not math.isnan(value):
                    metrics.append(Metric(_key(f"{row['part']}.{name}"), float(value), stamp, 0))
        client.log_batch(run_id, metrics=metrics)
        for name in artifact_names(o):
            client.log_artifact(run_id, str(report_dir / name))
    except Exception:
        client.set_terminated(run_id, status="FAILED")
        raise
    client.set_terminated(run_id)
    return run_id
