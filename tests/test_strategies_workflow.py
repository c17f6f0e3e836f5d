"""Every strategy runs in the real workflow through config alone, into one summary table."""

from __future__ import annotations

import csv
import json

import pytest

from workflow_util import snakemake, tiny_config, write_config

pytestmark = pytest.mark.slow

STRATEGIES = {
    "fedavg": {"name": "fedavg"},
    "fedavgm": {"name": "fedavgm", "server_momentum": 0.9},
    "fedadam": {"name": "fedadam", "eta": 0.01},
    "fedyogi": {"name": "fedyogi"},
    "fedadagrad": {"name": "fedadagrad"},
    "fusion": {"name": "fedumm_fusion", "mapping": "softmax"},
    "fedcmp": {"name": "fedcmp"},
    "dp": {"name": "dp_fedavg", "clip_norm": 1.0, "noise_multiplier": 0.5, "delta": 1e-5},
    "median": {"name": "fedavg", "robust": {"name": "median"}},
    "lora_exact": {"name": "lora_fedavg", "mode": "exact"},
    "ties": {"name": "merge", "method": "ties", "density": 0.5},
    "scaffold": {"name": "scaffold"},
    "moon": {"name": "moon"},
    "ffa": {"name": "lora_fedavg", "mode": "ffa"},
    "flora": {"name": "lora_fedavg", "mode": "stack"},
}


def test_every_strategy_runs_and_lands_in_one_summary(tmp_path):
    experiments = {name: {"strategy": strategy} for name, strategy in STRATEGIES.items()}
    config = tiny_config(experiments, rounds=1, clients=2)
    config["defaults"]["eval"]["initial"] = False  # round 0 is the same model in every experiment
    write_config(tmp_path, config)
    snakemake(tmp_path, "--cores", "2")

    with open(tmp_path / "results/summary.csv") as handle:
        rows = {row["name"]: row for row in csv.DictReader(handle)}
    assert set(rows) == set(STRATEGIES)
    for name, strategy in STRATEGIES.items():
        assert rows[name]["strategy"] == strategy["name"]
        assert 0.0 <= float(rows[name]["final_vqa_accuracy"]) <= 1.0
        round_summary = json.loads((tmp_path / f"results/{name}/round_001/aggregate.json").read_text())
        assert round_summary["strategy"] == strategy["name"] and round_summary["clients"] == [0, 1]
    dp_round = json.loads((tmp_path / "results/dp/round_001/aggregate.json").read_text())
    assert dp_round["dp_epsilon"] > 0 and dp_round["dp_delta"] == 1e-5
    lora_round = json.loads((tmp_path / "results/lora_exact/round_001/aggregate.json").read_text())
    assert lora_round["lora"]["fedit_error"] > 0  # averaging A and B apart is not the mean product
    flora_round = json.loads((tmp_path / "results/flora/round_001/aggregate.json").read_text())
    flora_config = json.loads((tmp_path / "results/flora/round_001/global/adapter_config.json").read_text())
    assert flora_round["lora_rank"] == flora_config["r"] == 2 * config["defaults"]["lora"]["r"]  # K·r after round 1
    adam_state = tmp_path / "results/fedadam/round_001/server_state.safetensors"
    assert adam_state.stat().st_size > (tmp_path / "results/fedavg/round_001/server_state.safetensors").stat().st_size
