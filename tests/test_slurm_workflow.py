"""A small federated experiment run through SLURM (snakemake-executor-plugin-slurm, squeue status)."""

from __future__ import annotations

import json
import subprocess

import pytest
from slurm_cluster import NODE_FEATURE, ClusterInfo, snakemake_slurm_command
from workflow_util import REPO, tiny_config, write_config

pytestmark = [pytest.mark.slurm, pytest.mark.slow]


def test_federated_round_on_slurm(slurm_cluster: ClusterInfo, tmp_path):
    config = tiny_config(rounds=1)
    # what a rule asks for reaches sbatch unchanged: 3 CPUs, more than this 2-core submit host has,
    # are not capped by a local --cores
    config["resources"]["client_train"] = {"cpus": 3, "mem_mb": 3000, "constraint": NODE_FEATURE}
    write_config(tmp_path, config)
    command = snakemake_slurm_command(slurm_cluster, REPO / "Snakefile", tmp_path, "--jobs", "4")
    result = subprocess.run(command, cwd=tmp_path, env=slurm_cluster.env, capture_output=True, text=True, timeout=900)
    log = f"$ {' '.join(command)}\n{result.stdout[-5000:]}\n{result.stderr[-5000:]}"
    assert result.returncode == 0, f"{log}\n{slurm_cluster.logs_tail()}"

    evaluation = json.loads((tmp_path / "results/fedavg/round_001/eval.json").read_text())
    assert 0.0 <= evaluation["vqa"]["accuracy"] <= 1.0 and evaluation["n"] == 40
    assert (tmp_path / "results/summary.md").exists()

    # Client training, aggregation and evaluation went through SLURM as batch jobs;
    # partition and the tables are local rules and ran in the submitting process.
    jobs = slurm_cluster.run("squeue", "--states=all", "-h", "-o", "%T|%k").splitlines()
    completed = [name.split("_wildcards_")[0] for state, name in (job.split("|", 1) for job in jobs) if state == "COMPLETED"]
    for rule, count in {"rule_client_train": 2, "rule_aggregate": 1, "rule_evaluate": 2, "rule_base_model": 1}.items():
        assert completed.count(rule) == count, (rule, jobs)
    assert "rule_partition" not in completed

    requested = [line.split("|") for line in slurm_cluster.run(
        "squeue", "--states=all", "-h", "-o", "%k|%C|%m|%f|%P").splitlines()]
    client_jobs = [fields[1:] for fields in requested if fields[0].startswith("rule_client_train")]
    assert client_jobs == [["3", "3000M", NODE_FEATURE, slurm_cluster.partition]] * 2, requested
    aggregate_jobs = [fields[1:] for fields in requested if fields[0].startswith("rule_aggregate")]
    assert aggregate_jobs == [["1", "1000M", "(null)", slurm_cluster.partition]], requested
