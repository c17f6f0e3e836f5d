"""Experiment tracking on a real run: a real MLflow tracking server started on 127.0.0.1, and
TensorBoard's event files read back with TensorBoard's own reader."""

from __future__ import annotations

import json
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest
from workflow_util import snakemake, tiny_config, write_config

from fedumm.reports import tracking

pytestmark = pytest.mark.slow

ROUNDS = 2


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@pytest.fixture(scope="module")
def mlflow_server(tmp_path_factory):
    """``mlflow server`` on a free port of 127.0.0.1, with a SQLite store and local artifacts."""
    root = tmp_path_factory.mktemp("mlflow")
    port = _free_port()
    command = [str(Path(sys.executable).parent / "mlflow"), "server", "--host", "127.0.0.1", "--port", str(port),
               "--backend-store-uri", f"sqlite:///{root / 'store.db'}", "--default-artifact-root", str(root / "artifacts"),
               "--workers", "1"]
    with (root / "server.log").open("w") as server_log:
        server = subprocess.Popen(command, stdout=server_log, stderr=subprocess.STDOUT)
        uri = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 300
        while True:
            try:
                with urllib.request.urlopen(f"{uri}/health", timeout=2):
                    break
            except OSError:
                if server.poll() is not None or time.monotonic() > deadline:
                    server.kill()
                    pytest.fail(f"mlflow server did not start:\n{(root / 'server.log').read_text()[-3000:]}")
                time.sleep(0.5)
        yield uri
        server.terminate()
        server.wait(timeout=30)


@pytest.fixture(scope="module")
def tracked_run(tmp_path_factory, mlflow_server) -> tuple[Path, dict]:
    workdir = tmp_path_factory.mktemp("tracked")
    config = tiny_config({"fedavg": {}}, rounds=ROUNDS)
    config["defaults"]["eval"].update(every=1, initial=True)
    config["tracking"] = {"mlflow": {"tracking_uri": mlflow_server, "experiment_name": "fedumm-test"},
                          "tensorboard": {"log_dir": "results/tensorboard"}}
    write_config(workdir, config)
    snakemake(workdir, "--cores", "2")
    return workdir, config


def test_mlflow_holds_the_run_s_params_and_every_round_s_metrics(tracked_run, mlflow_server):
    from mlflow.tracking import MlflowClient

    workdir, _ = tracked_run
    client = MlflowClient(tracking_uri=mlflow_server)
    experiment = client.get_experiment_by_name("fedumm-test")
    (run,) = client.search_runs([experiment.experiment_id], filter_string=f"tags.`{tracking.EXPERIMENT_TAG}` = 'fedavg'")
    assert run.data.params["strategy"] == str({"name": "fedavg"}) and run.data.params["rounds"] == str(ROUNDS)
    assert float(run.data.params["train.lr"]) == 0.005

    loss = client.get_metric_history(run.info.run_id, "server/train_loss")
    assert [m.step for m in sorted(loss, key=lambda m: m.step)] == [1, 2]
    for metric in loss:
        aggregate = json.loads((workdir / f"results/fedavg/round_{metric.step:03d}/aggregate.json").read_text())
        assert metric.value == pytest.approx(aggregate["train_loss"])
    client_loss = client.get_metric_history(run.info.run_id, "client_1/train_loss")
    assert sorted(m.step for m in client_loss) == [1, 2]
    scores = {m.step: m.value for m in client.get_metric_history(run.info.run_id, "eval/score")}
    assert sorted(scores) == [0, 1, 2]
    for step, value in scores.items():
        evaluation = json.loads((workdir / f"results/fedavg/round_{step:03d}/eval.json").read_text())
        assert value == pytest.approx(evaluation["score"])
    assert client.get_metric_history(run.info.run_id, "eval/vqa/per_answer_type/yes/no")

    artifacts = {artifact.path for artifact in client.list_artifacts(run.info.run_id)}
    assert {"metrics.csv", "config.yaml", "lineage.jsonl"} <= artifacts


def test_tensorboard_event_files_hold_every_round(tracked_run):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    workdir, _ = tracked_run
    events = EventAccumulator(str(workdir / "results/tensorboard/fedavg"))
    events.Reload()
    score = {event.step: event.value for event in events.Scalars("eval/score")}
    assert sorted(score) == [0, 1, 2]
    final = json.loads((workdir / f"results/fedavg/round_{ROUNDS:03d}/eval.json").read_text())
    assert score[ROUNDS] == pytest.approx(final["score"])
    assert sorted(event.step for event in events.Scalars("server/bytes_uploaded")) == [1, 2]


def test_an_unreachable_tracking_server_is_a_warning_not_a_failure(tracked_run):
    """The evaluation reruns with the server gone: it succeeds, writes the same eval.json, and warns."""
    workdir, config = tracked_run
    eval_file = workdir / f"results/fedavg/round_{ROUNDS:03d}/eval.json"
    before = eval_file.read_bytes()
    eval_file.unlink()
    config["tracking"] = {"mlflow": {"tracking_uri": f"http://127.0.0.1:{_free_port()}"}}
    write_config(workdir, config)
    started = time.monotonic()
    snakemake(workdir, "--cores", "1", str(eval_file.relative_to(workdir)))
    assert time.monotonic() - started < 120
    assert eval_file.read_bytes() == before
    job_log = (workdir / f"logs/evaluate/fedavg/round_{ROUNDS:03d}.log").read_text()
    assert "tracking: mlflow unavailable for fedavg, nothing logged there" in job_log


def test_round_metrics_name_server_and_client_values() -> None:
    metrics = tracking.round_metrics(
        {"round": 3, "train_loss": 1.5, "clients": [0, 2], "uploads": {"0": {"weight": 0.5}}, "robust": None},
        {0: {"train_loss": 2.0, "trained_groups": ["language"], "binding": {"round": 3}}, 2: {"val_score": 0.25}},
    )
    assert metrics == {"server/round": 3.0, "server/train_loss": 1.5, "server/clients": 2.0,
                       "client_0/train_loss": 2.0, "client_2/val_score": 0.25}
    assert tracking.eval_metrics({"round": 1, "score": 0.5, "vqa": {"accuracy": 0.5, "per_answer_type": {"yes/no": 0.75}},
                                  "per_client": {"client_0": {"score": 0.1}}, "caption": None,
                                  "chance": {"per_question_type": {"how many": 0.3}}}) == {
        "eval/score": 0.5, "eval/vqa/accuracy": 0.5, "eval/vqa/per_answer_type/yes/no": 0.75}
