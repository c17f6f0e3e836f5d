"""One real workflow run comparing every strategy with the baselines: the summary table, the
papers' tables and curves, and the Snakemake report that collects them.

One run serves all of these tests because every workflow job pays seconds of Python imports:
separate runs would repeat the data, base model and baseline jobs.
"""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest
import yaml
from safetensors.torch import load_file
from workflow_util import (
    embedded_bytes,
    job_counts,
    report_results,
    snakemake,
    tiny_config,
    write_config,
)

pytestmark = pytest.mark.slow

STRATEGIES = {
    "fedavg": {"name": "fedavg"},
    "fedavgm": {"name": "fedavgm", "server_momentum": 0.9},
    "fedadam": {"name": "fedadam", "eta": 0.01},
    "fedyogi": {"name": "fedyogi"},
    "fusion": {"name": "fedumm_fusion", "mapping": "softmax"},
    "fedcmp": {"name": "fedcmp"},
    "dp": {"name": "dp_fedavg", "clip_norm": 1.0, "noise_multiplier": 0.5, "delta": 1e-5},
    "median": {"name": "fedavg", "robust": {"name": "median"}},  # at α=1: Table 1's second column
    "lora_exact": {"name": "lora_fedavg", "mode": "exact"},
    "ties": {"name": "merge", "method": "ties", "density": 0.5},
    "scaffold": {"name": "scaffold"},
    "moon": {"name": "moon"},
    "ffa": {"name": "lora_fedavg", "mode": "ffa"},
    "flora": {"name": "lora_fedavg", "mode": "stack"},
}
# Table 1 needs the centralized reference (and a second α: the median experiment); Table 3 the
# single-site (local) row.
BASELINES = {
    "centralized": {"kind": "centralized"},
    "local": {"kind": "local"},
}
# FedAvg with a proximal term is FedProx: its own label and Table 1 row, never averaged with fedavg.
PROX = {"prox": {"strategy": {"name": "fedavg"}, "train": {"prox_mu": 0.01}}}
# Full fine-tuning (dense deltas of the connector and language model): Table 3's and Table 4's full rows.
FULL = {
    "full": {"tuning": {"mode": "full"}},
    "full_centralized": {"kind": "centralized", "tuning": {"mode": "full"}},
}
PAPER_FILES = [f"results/tables/{t}.{ext}" for t in ("table1", "table3", "table4") for ext in ("csv", "md", "tex")]


@pytest.fixture(scope="module")
def comparison_run(tmp_path_factory) -> tuple[Path, dict]:
    """Every strategy and the baselines, one round of 2 clients each, in one snakemake run."""
    workdir = tmp_path_factory.mktemp("comparison")
    experiments = {name: {"strategy": strategy} for name, strategy in STRATEGIES.items()} | BASELINES | PROX | FULL
    experiments["median"]["partition"] = {"alpha": 1.0}
    config = tiny_config(experiments, rounds=1, clients=2)
    config["defaults"]["eval"]["initial"] = False  # round 0 is the same model in every experiment
    write_config(workdir, config)
    snakemake(workdir, "--cores", "2")
    return workdir, config


def _csv(path: Path) -> list[dict]:
    with path.open(newline="") as handle:
        return list(csv.DictReader(handle))


def test_every_strategy_runs_and_lands_in_one_summary(comparison_run):
    workdir, config = comparison_run
    rows = {row["name"]: row for row in _csv(workdir / "results/summary.csv")}
    assert set(rows) == set(STRATEGIES) | set(BASELINES) | set(PROX) | set(FULL)
    assert (rows["prox"]["strategy"], rows["prox"]["label"]) == ("fedavg", "fedprox (μ=0.01)")
    assert (rows["median"]["label"], rows["dp"]["label"]) == (
        "fedavg + median", "dp_fedavg (clip_norm=1, noise_multiplier=0.5, delta=1e-05, sampling_rate=1)")
    summary_md = (workdir / "results/summary.md").read_text()
    assert "| prox | federated | fedprox (μ=0.01) | 2 | 0.5 |" in summary_md
    assert "| centralized | centralized | n/a | pooled | pooled |" in summary_md
    # every experiment keeps the config it ran with, one that reruns it alone
    resolved = yaml.safe_load((workdir / "results/prox/config.yaml").read_text())
    assert resolved["experiments"]["prox"]["train"]["prox_mu"] == 0.01
    rerun = job_counts(snakemake(workdir, "-n", "--configfile", "results/prox/config.yaml").stdout)
    assert not {"init_adapter", "client_train", "aggregate", "evaluate"} & set(rerun)  # same experiment: nothing to retrain
    for name, strategy in STRATEGIES.items():
        assert rows[name]["strategy"] == strategy["name"]
        assert 0.0 <= float(rows[name]["final_vqa_accuracy"]) <= 1.0
        round_summary = json.loads((workdir / f"results/{name}/round_001/aggregate.json").read_text())
        assert round_summary["strategy"] == strategy["name"] and round_summary["clients"] == [0, 1]
    dp_round = json.loads((workdir / "results/dp/round_001/aggregate.json").read_text())
    assert dp_round["dp_epsilon"] > 0 and dp_round["dp_delta"] == 1e-5
    lora_round = json.loads((workdir / "results/lora_exact/round_001/aggregate.json").read_text())
    assert lora_round["lora"]["fedit_error"] > 0  # averaging A and B apart is not the mean product
    flora_round = json.loads((workdir / "results/flora/round_001/aggregate.json").read_text())
    flora_config = json.loads((workdir / "results/flora/round_001/global/adapter_config.json").read_text())
    assert flora_round["lora_rank"] == flora_config["r"] == 2 * config["defaults"]["lora"]["r"]  # K·r after round 1
    adam_state = workdir / "results/fedadam/round_001/server_state.safetensors"
    assert adam_state.stat().st_size > (workdir / "results/fedavg/round_001/server_state.safetensors").stat().st_size


def test_the_papers_tables_hold_the_runs(comparison_run):
    workdir, _ = comparison_run
    table1 = _csv(workdir / "results/tables/table1.csv")
    rows = {row["Strategy"]: row for row in table1}
    central, fedavg, prox, median = (rows[label] for label in ("Centralized (centralized)", "fedavg [tuning.mode=joint]",
                                                                 "fedprox (μ=0.01)", "fedavg + median"))
    # each federated row is compared with the centralized run of its own tuning mode
    full, full_central = rows["fedavg [tuning.mode=full]"], rows["Centralized (full_centralized)"]
    assert float(full["vs. centralized"]) == pytest.approx(float(full["α=0.5"]) - float(full_central["Avg"]))
    # fedavg, FedProx and fedavg + median share the strategy name fedavg: each has its own row
    assert (fedavg["α=1"], median["α=0.5"], prox["α=1"]) == ("", "", "")
    assert float(fedavg["Avg"]) == pytest.approx(float(fedavg["α=0.5"]))
    assert float(prox["vs. centralized"]) == pytest.approx(float(prox["α=0.5"]) - float(central["Avg"]))
    assert float(median["Avg"]) == pytest.approx(float(median["α=1"]))

    table3 = {row["Configuration"]: row for row in _csv(workdir / "results/tables/table3.csv")}
    summary = {row["name"]: row for row in _csv(workdir / "results/summary.csv")}
    assert table3["Centralized (full fine-tuning)"]["Experiment"] == "full_centralized"
    assert table3["Federated (full fine-tuning)"]["Experiment"] == "full"
    assert table3["Single site (full fine-tuning)"]["Experiment"] == ""  # no such experiment: no number
    for configuration, name in (("Centralized (full fine-tuning)", "full_centralized"),
                                ("Federated (full fine-tuning)", "full")):
        assert float(table3[configuration]["VQA acc. (%)"]) == pytest.approx(100 * float(summary[name]["selected_score"]))
    assert table3["Centralized + LoRA"]["Experiment"] == "centralized" and table3["Single site + LoRA"]["Experiment"] == "local"

    table4 = {row["Experiment"]: row for row in _csv(workdir / "results/tables/table4.csv")}
    assert set(STRATEGIES) <= set(table4)
    row = table4["fedavg"]
    assert float(row["Client (s)"]) > 0 and float(row["Server (s)"]) > 0
    assert row["Client (GPU-h)"] == ""  # the tiny config has no GPU
    aggregate = json.loads((workdir / "results/fedavg/round_001/aggregate.json").read_text())
    assert float(row["Comm. (GB)"]) == pytest.approx(aggregate["bytes_uploaded"] / 1e9)
    assert 0 < float(row["Comm. / full (%)"]) < 100
    # full fine-tuning uploads every connector and language weight as a dense delta
    full = table4["full"]
    assert (full["Tuning"], row["Tuning"]) == ("full fine-tuning", "LoRA")
    dense_round = json.loads((workdir / "results/full/round_001/aggregate.json").read_text())
    dense_global = load_file(workdir / "results/full/round_001/global/adapter_model.safetensors")
    dense_bytes = sum(t.numel() * t.element_size() for t in dense_global.values())
    assert dense_bytes * 2 <= dense_round["bytes_uploaded"] < (dense_bytes + 65536) * 2  # two clients
    # every connector and language weight against LoRA's r=8 factors: larger even for this tiny model
    assert float(full["Comm. (GB)"]) > 2 * float(row["Comm. (GB)"])
    # everything but the frozen vision encoder (most of this tiny model's bytes)
    assert float(row["Comm. / full (%)"]) < float(full["Comm. / full (%)"]) < 100

    tex = (workdir / "results/tables/table1.tex").read_text()
    assert r"\toprule" in tex and r"$\alpha$=0.5" in tex
    assert (workdir / "results/accuracy_vs_bytes.png").read_bytes()[:4] == b"\x89PNG"


def test_the_report_collects_tables_and_figures(comparison_run):
    """`snakemake --report` embeds the three tables in every format and both curves, byte for byte."""
    workdir, _ = comparison_run
    snakemake(workdir, "--report", "report.html")
    results = report_results((workdir / "report.html").read_text(encoding="utf-8"))
    for path in [*PAPER_FILES, "results/accuracy_vs_bytes.png", "results/score_vs_round.png",
                 "results/summary.csv", "results/fedavg/partition/heatmap.png"]:
        assert path in results, path
        assert embedded_bytes(results[path]) == (workdir / path).read_bytes(), path
    assert "FedUMM Table 1" in results["results/tables/table1.csv"]["caption"]
