"""Experiment tracking: MLflow and TensorBoard, both optional, both off by default (config ``tracking:``).

The files under ``results/`` stay the record of a run; tracking mirrors them as they are written,
so that a researcher can watch a sweep in the tools they already use. One MLflow run (and one
TensorBoard directory) per experiment:

- per round, from the ``aggregate`` job: the server's aggregated metrics (``server/...``) and each
  client's (``client_{k}/...``), the round being the step;
- per evaluated round, from the ``evaluate`` job: the scores of eval.json (``eval/...``);
- per experiment, from ``experiment_tables``: the resolved config as params, and metrics.csv,
  config.yaml and the partition heatmap as artifacts.

The jobs read the ``tracking`` block from the whole config rather than from their params, so that
switching tracking on or off never reruns a job. A tracking failure (server down, bad URI, a package
missing) is a warning in the job's log, never an error: MLflow gets no HTTP retries and a short
timeout, so an unreachable server costs a job seconds at most.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from fedumm.reports.identity import flatten

log = logging.getLogger(__name__)

EXPERIMENT_TAG = "fedumm.experiment"
WORKDIR_TAG = "fedumm.workdir"
# An unreachable server must not hold a job: no retries, a few seconds per request.
MLFLOW_ENVIRONMENT = {"MLFLOW_HTTP_REQUEST_MAX_RETRIES": "0", "MLFLOW_HTTP_REQUEST_TIMEOUT": "5"}


def numeric_leaves(values: Mapping[str, Any], prefix: str) -> dict[str, float]:
    """The numbers of a nested mapping as ``prefix/a/b`` → float (booleans and None left out)."""
    metrics: dict[str, float] = {}
    for key, value in values.items():
        name = f"{prefix}/{key}"
        if isinstance(value, Mapping):
            metrics.update(numeric_leaves(value, name))
        elif isinstance(value, (int, float)) and not isinstance(value, bool):
            metrics[name] = float(value)
    return metrics


def _scalars(values: Mapping[str, Any]) -> dict[str, Any]:
    """The top-level values of a JSON object that are neither objects nor lists."""
    return {key: value for key, value in values.items() if not isinstance(value, (Mapping, list))}


def round_metrics(aggregate_summary: Mapping[str, Any], client_metrics: Mapping[int, Mapping[str, Any]]) -> dict[str, float]:
    """A round's metrics: aggregate.json's scalars as ``server/...``, each client's metrics.json as ``client_{k}/...``."""
    metrics = numeric_leaves(_scalars(aggregate_summary), "server")
    metrics["server/clients"] = float(len(aggregate_summary.get("clients", [])))
    for client, values in sorted(client_metrics.items()):
        metrics.update(numeric_leaves(_scalars(values), f"client_{client}"))
    return metrics


def eval_metrics(evaluation: Mapping[str, Any]) -> dict[str, float]:
    """eval.json's scores as ``eval/...`` (per-client blocks left out: they are the clients' own runs;
    the chance block too: it describes the data, not the model)."""
    kept = {key: value for key, value in evaluation.items() if key not in ("round", "per_client", "chance")}
    return numeric_leaves(kept, "eval")


class MLflowTracker:
    """One MLflow run per experiment of this working directory, found again by its tags."""

    def __init__(self, settings: Mapping[str, Any], experiment: str) -> None:
        os.environ.update(MLFLOW_ENVIRONMENT)
        from mlflow.tracking import MlflowClient

        self.client = MlflowClient(tracking_uri=settings["tracking_uri"])
        name = settings.get("experiment_name") or "fedumm"
        found = self.client.get_experiment_by_name(name)
        experiment_id = found.experiment_id if found else self.client.create_experiment(name)
        workdir = str(Path.cwd().resolve())
        runs = self.client.search_runs(
            [experiment_id],
            filter_string=f"tags.`{EXPERIMENT_TAG}` = '{experiment}' and tags.`{WORKDIR_TAG}` = '{workdir}'",
            max_results=1,
        )
        self.run_id = runs[0].info.run_id if runs else self.client.create_run(
            experiment_id, run_name=experiment, tags={EXPERIMENT_TAG: experiment, WORKDIR_TAG: workdir}
        ).info.run_id

    def metrics(self, step: int, metrics: Mapping[str, float]) -> None:
        from mlflow.entities import Metric

        timestamp = int(time.time() * 1000)
        batch = [Metric(key, value, timestamp, step) for key, value in metrics.items()]
        for start in range(0, len(batch), 1000):  # MLflow's limit per log_batch
            self.client.log_batch(self.run_id, metrics=batch[start : start + 1000])

    def params(self, params: Mapping[str, str]) -> None:
        from mlflow.entities import Param

        batch = [Param(key, value[:6000]) for key, value in params.items()]
        for start in range(0, len(batch), 100):
            self.client.log_batch(self.run_id, params=batch[start : start + 100])

    def artifacts(self, paths: Iterable[Path]) -> None:
        for path in paths:
            self.client.log_artifact(self.run_id, str(path))


class TensorBoardTracker:
    """Scalars under ``{log_dir}/{experiment}``; each job appends an event file of its own."""

    def __init__(self, settings: Mapping[str, Any], experiment: str) -> None:
        from torch.utils.tensorboard import SummaryWriter

        self.writer = SummaryWriter(log_dir=str(Path(settings["log_dir"]) / experiment))

    def metrics(self, step: int, metrics: Mapping[str, float]) -> None:
        for key, value in metrics.items():
            self.writer.add_scalar(key, value, step)
        self.writer.flush()

    def params(self, params: Mapping[str, str]) -> None:
        self.writer.add_text("config", "\n".join(f"    {key}: {value}" for key, value in params.items()))
        self.writer.flush()

    def artifacts(self, paths: Iterable[Path]) -> None:
        """TensorBoard keeps no files; the artifacts stay under results/."""


BACKENDS = {"mlflow": MLflowTracker, "tensorboard": TensorBoardTracker}


def _each_tracker(tracking: Mapping[str, Any] | None, experiment: str):
    for name, backend in BACKENDS.items():
        settings = (tracking or {}).get(name)
        if not settings:
            continue
        try:
            yield name, backend(settings, experiment)
        except Exception as error:  # any failure of a tracking backend is a warning, never a failed job
            log.warning("tracking: %s unavailable for %s, nothing logged there (%s: %s)",
                        name, experiment, type(error).__name__, error)


def _safely(name: str, what: str, call) -> None:
    try:
        call()
    except Exception as error:  # see _each_tracker
        log.warning("tracking: %s could not log %s (%s: %s)", name, what, type(error).__name__, error)


def track_metrics(tracking: Mapping[str, Any] | None, experiment: str, step: int, metrics: Mapping[str, float]) -> None:
    """Log ``metrics`` at ``step`` to every tracking backend switched on."""
    for name, tracker in _each_tracker(tracking, experiment):
        _safely(name, f"round {step}", lambda: tracker.metrics(step, metrics))


def track_run(tracking: Mapping[str, Any] | None, experiment: str, resolved: Mapping[str, Any],
              artifacts: Iterable[Path]) -> None:
    """Log an experiment's resolved config as params (dotted keys) and its files as artifacts."""
    params = {key: str(value) for key, value in flatten(resolved).items()}
    paths = [Path(path) for path in artifacts if Path(path).is_file()]
    for name, tracker in _each_tracker(tracking, experiment):
        _safely(name, "params", lambda: tracker.params(params))
        _safely(name, "artifacts", lambda: tracker.artifacts(paths))
