"""Logging runs to a local MLflow tracking folder (falsify.report.tracking; docs/reports.md)."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from typing import Any

import pytest

import falsify
from falsify.cli.main import main
from falsify.report.tracking import EXPERIMENT, VERDICT_METRIC, tracking_uri

needs_mlflow = pytest.mark.skipif(
    importlib.util.find_spec("mlflow") is None, reason="mlflow is not installed"
)


def test_without_mlflow_the_run_stops_before_training(
    write, tiny_yaml, tmp_path, monkeypatch, capsys
) -> None:
    monkeypatch.setitem(sys.modules, "mlflow", None)  # as if not installed
    cache = tmp_path / "cache"
    assert main(["run", str(write(tiny_yaml)), "--cache", str(cache), "--mlflow", "t"]) == 2
    (line,) = capsys.readouterr().err.strip().splitlines()
    assert "pip install 'falsify-interp[mlflow]'" in line
    assert not cache.exists()


def test_a_folder_is_a_local_store_and_a_uri_is_kept(tmp_path) -> None:
    assert tracking_uri(tmp_path / "t") == f"sqlite:///{(tmp_path / 't').resolve()}/mlflow.db"
    assert (tmp_path / "t").is_dir()
    assert tracking_uri("http://127.0.0.1:5000") == "http://127.0.0.1:5000"


def _runs(folder: Path) -> tuple[Any, list[Any]]:
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri=tracking_uri(folder))
    experiment = client.get_experiment_by_name(EXPERIMENT)
    return client, client.search_runs([experiment.experiment_id], order_by=["start_time ASC"])


@needs_mlflow
@pytest.mark.slow
def test_a_run_is_logged_with_params_metrics_and_artifacts(write, tiny_yaml, tmp_path) -> None:
    track = tmp_path / "track"
    outcome = falsify.run(write(tiny_yaml), cache=tmp_path / "cache", mlflow=track)
    client, runs = _runs(track)
    (run,) = runs
    assert run.info.status == "FINISHED" and run.info.run_name == "tiny"
    params = run.data.params
    assert params["population.training.epochs"] == "3"
    assert params["population.seeds"] == "[0, 1, 2]"
    assert params["test.x.kind"] == "class_selectivity" and params["prediction.sesoi"] == "0.1"
    metrics = run.data.metrics
    assert metrics["verdict"] == VERDICT_METRIC[outcome.verdict]
    (part,) = outcome.parts.to_dict("records")
    for name in ("estimate", "ci_low", "ci_high", "p_support_adj"):
        assert metrics[f"hidden1.{name}"] == pytest.approx(part[name], rel=1e-12)
    assert run.data.tags["verdict"] == outcome.verdict.value
    assert run.data.tags["provenance.file_sha256"] == outcome.provenance["file_sha256"]
    assert run.data.tags["provenance.falsify_version"] == outcome.provenance["falsify_version"]
    assert not any(k.startswith("provenance.cache_keys") for k in run.data.tags)
    names = {a.path for a in client.list_artifacts(run.info.run_id)}
    assert {"tiny.md", "tiny.csv", "tiny.parts.csv", "tiny.json"} <= names
    assert any(n.endswith(".png") for n in names)
    local = Path(client.download_artifacts(run.info.run_id, "tiny.md", str(tmp_path / "dl")))
    assert local.read_text().startswith(f"# tiny: {outcome.verdict.value}")
    assert (track / "mlflow.db").is_file() and (track / "artifacts").is_dir()


@needs_mlflow
@pytest.mark.slow
def test_the_cli_logs_through_the_environment_variable(
    write, tiny_yaml, tmp_path, monkeypatch, capsys
) -> None:
    track = tmp_path / "env-track"
    monkeypatch.setenv("FALSIFY_MLFLOW", str(track))
    path = write(tiny_yaml)
    args = ["run", str(path), "--cache", str(tmp_path / "cache"), "--out", str(tmp_path / "r")]
    assert main([*args, "--quiet"]) in (0, 1)
    assert main([*args, "--quiet"]) in (0, 1)  # a second run: a second MLflow run, same store
    _, runs = _runs(track)
    assert len(runs) == 2 and all(r.info.run_name == "tiny" for r in runs)
    assert runs[0].data.metrics == runs[1].data.metrics  # cached replicates, same numbers
    assert "error" not in capsys.readouterr().err
