"""Real-dataset rules in the workflow: download -> normalize picked by `kind`, and one run of a
fixture-sized VQA v2 experiment and a CC3M-format one through the whole pipeline, their
sources served by a local HTTP server."""

from __future__ import annotations

import copy
import csv
import json
from collections.abc import Callable
from pathlib import Path

import pytest
from fixtures_http import (
    cc3m_rows,
    serve,
    vqav2_sources,
    write_cc3m_tsv,
    write_vqav2,
    write_web_images,
)
from workflow_util import job_counts, snakemake, tiny_config, write_config

FAST_DOWNLOAD = {"retries": 1, "backoff": 0.01, "timeout": 10}
SMALL = {"scheme": "iid", "min_size": 1}


def vqav2_dataset(url: Callable[[str], str]) -> dict:
    return {
        "kind": "vqav2",
        "seed": 0,
        "shard_size": 4,
        "splits": {"train": 6, "val": 4, "test": 4},
        "download": FAST_DOWNLOAD,
        "sources": vqav2_sources(url),
    }


def cc3m_dataset(url: Callable[[str], str]) -> dict:
    # No val split: the test split is carved out of the training list.
    return {
        "kind": "image_text",
        "format": "cc3m_tsv",
        "shard_size": 4,
        "splits": {"train": 4, "val": 0, "test": 2},
        "download": FAST_DOWNLOAD,
        "sources": {"train": url("Train_GCC-training.tsv")},
        "rows_per_shard": 4,
        "workers": 2,
    }


def real_data_config(url: Callable[[str], str], experiments: dict) -> dict:
    config = tiny_config(experiments, rounds=1, clients=2)
    # Shapes stays for pretraining the tiny model, as small as it goes.
    config["datasets"]["shapes"]["splits"] = {"public": 64, "train": 2, "val": 0, "test": 1}
    config["models"]["tiny"]["pretrain"].update(steps=4)
    config["defaults"]["eval"].update(every=100, initial=False)
    config["datasets"]["vqa"] = vqav2_dataset(url)
    config["datasets"]["cc3m"] = cc3m_dataset(url)
    return config


def test_dataset_kind_picks_the_rules(tmp_path):
    config = real_data_config(lambda name: f"http://127.0.0.1:9/{name}", {"vqa": {"dataset": "vqa", "partition": SMALL}})
    write_config(tmp_path, config)
    dry = snakemake(tmp_path, "-n", "results/data/vqa", "results/data/cc3m", "results/data/shapes").stdout
    assert {rule: n for rule, n in job_counts(dry).items() if rule != "all"} == {
        "download_dataset": 2, "normalize_dataset": 2, "shapes_data": 1}
    assert "resources/downloads/vqa/manifest.json" in dry and "resources/downloads/cc3m/manifest.json" in dry


# VQA v2 reads cached vision features; CC3M trains vision LoRA, so its clients decode the JPEGs
# themselves (both paths read the new image members, and 3 feature jobs fewer keep CI short).
EXPERIMENTS = {
    "vqa": {"dataset": "vqa", "partition": SMALL},
    "cc3m": {"dataset": "cc3m", "partition": SMALL, "lora": {"vision_target_modules": ["q_proj", "v_proj"]}},
}


@pytest.fixture(scope="module")
def pipeline_run(tmp_path_factory) -> tuple[Path, str]:
    """One workflow run of both experiments; returns the work directory and the served URL of
    the CC3M row whose image is gone."""
    served = tmp_path_factory.mktemp("served")
    write_vqav2(served)
    workdir = tmp_path_factory.mktemp("work")
    with serve(served) as server:
        write_web_images(served, 7)
        write_cc3m_tsv(served / "Train_GCC-training.tsv", cc3m_rows(server, 7, broken={5: "web/gone.jpg"}))
        write_config(workdir, real_data_config(server.url, copy.deepcopy(EXPERIMENTS)))
        snakemake(workdir, "--cores", "2")
        return workdir, server.url("web/gone.jpg")


def _client_metrics(results: Path, exp: str) -> dict:
    return json.loads((results / exp / "round_001/clients/0/metrics.json").read_text())


@pytest.mark.slow
def test_vqav2_experiment_runs_through_the_pipeline(pipeline_run):
    workdir, _ = pipeline_run
    results = workdir / "results"
    card = json.loads((results / "data/vqa/card.json").read_text())
    assert card["num_samples"] == {"train": 6, "val": 4, "test": 4}
    assert card["value_counts"]["train"]["answer_type"] == {"other": 3, "yes/no": 3}
    evaluation = json.loads((results / "vqa/round_001/eval.json").read_text())
    assert evaluation["round"] == 1 and evaluation["vqa"]["n"] == 4
    assert 0.0 <= evaluation["vqa"]["accuracy"] <= 1.0
    assert not (results / "vqa/round_000/eval.json").exists()  # eval.initial: false
    assert _client_metrics(results, "vqa")["steps"] == 3
    assert (results / "vqa/metrics.csv").read_text().splitlines()[1].startswith("vqa,1,")
    for rule in ("download_dataset", "normalize_dataset"):
        assert sorted(p.name for p in (workdir / "logs" / rule).iterdir()) == ["cc3m.log", "vqa.log"]
        assert sorted(p.name for p in (workdir / "benchmarks" / rule).iterdir()) == ["cc3m.tsv", "vqa.tsv"]


@pytest.mark.slow
def test_cc3m_experiment_trains_and_evaluates(pipeline_run):
    workdir, gone = pipeline_run
    results = workdir / "results"
    card = json.loads((results / "data/cc3m/card.json").read_text())
    # 7 rows, one image gone: 6 images, 4 train + 2 test (carved out of the training list).
    assert card["num_samples"] == {"train": 4, "val": 0, "test": 2}
    assert card["value_counts"]["train"]["task"] == {"caption": 4}
    failures = (workdir / "resources/downloads/cc3m/failures.tsv").read_text().splitlines()
    assert len(failures) == 2 and failures[1].startswith(f"train\t5\t{gone}\t") and "HTTP 404" in failures[1]
    metrics = _client_metrics(results, "cc3m")
    assert metrics["steps"] == 3 and "vision" in metrics["trained_groups"]
    evaluation = json.loads((results / "cc3m/round_001/eval.json").read_text())
    assert evaluation["round"] == 1 and evaluation["n"] == 2 and evaluation["vqa"] is None
    assert evaluation["caption"]["n"] == 2 and 0.0 <= evaluation["caption"]["CIDEr"] <= 10.0


@pytest.mark.slow
def test_both_experiments_reach_the_summary(pipeline_run):
    workdir, _ = pipeline_run
    results = workdir / "results"
    assert (results / "cc3m/metrics.csv").read_text().splitlines()[1].startswith("cc3m,1,caption.CIDEr,")
    with open(results / "summary.csv", newline="") as handle:
        metrics = {row["name"]: row["score_metric"] for row in csv.DictReader(handle)}
    assert metrics == {"cc3m": "caption.CIDEr", "vqa": "vqa.accuracy"}
