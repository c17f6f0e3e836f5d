"""What `snakemake -n` itself must decide about a config: the checks that need Snakemake (its YAML
loading, --config overrides, wildcards) rather than fedumm.config alone, which tests/test_config.py covers.
Each test is one dry run."""

from __future__ import annotations

import os
import re

import pytest
from workflow_util import REPO, job_counts, snakemake, tiny_config, write_config

pytestmark = pytest.mark.slow


def test_1200_rounds_from_a_nested_config_override_build_their_dag(tmp_path):
    """Rounds past 999 (round_1000, ...) resolve, round 0 still comes from init_adapter only, and a
    nested --config value, which Snakemake passes as the string '1200', counts as the number."""
    write_config(tmp_path, tiny_config(rounds=2, clients=2))
    result = snakemake(tmp_path, "-n", "--quiet", "rules", "--config", "defaults={rounds: 1200, eval: {every: 1200}}")
    counts = job_counts(result.stdout)
    assert counts["client_train"] == 2 * 1200
    assert counts["aggregate"] == 1200
    assert counts["evaluate"] == 2  # round 0 and round 1200
    assert counts["init_adapter"] == 1


def test_a_duplicate_key_in_a_configfile_is_refused_naming_it_and_its_line(tmp_path):
    write_config(tmp_path, tiny_config())
    (tmp_path / "more.yaml").write_text("defaults:\n  rounds: 4\n  clients: 2\n  rounds: 6\n")
    result = snakemake(tmp_path, "-n", "--configfile", "more.yaml", check=False)
    assert result.returncode != 0
    assert (f"config file {tmp_path / 'more.yaml'}, line 4, column 3: duplicate key 'rounds' "
            "(first given at line 2); keep one of them") in result.stdout + result.stderr


def test_a_yaml_syntax_error_in_the_config_names_the_file_and_line(tmp_path):
    path = write_config(tmp_path, tiny_config())
    lines = path.read_text().splitlines()
    at = next(i for i, line in enumerate(lines) if line.startswith("  rounds:"))
    lines[at] = "  rounds: [2"
    path.write_text("\n".join(lines) + "\n")
    result = snakemake(tmp_path, "-n", check=False)
    assert result.returncode != 0
    assert f"config file config/config.yaml, line {at + 2}, column " in result.stdout + result.stderr
    assert f"YAML syntax error: expected ',' or ']', but got ':' (while parsing a flow sequence at line {at + 1})" in result.stdout + result.stderr


def test_a_lora_target_the_model_lacks_stops_the_dry_run_naming_the_key(tmp_path):
    """The model checks run inside `snakemake -n` (workflow/rules/common.smk), before any job."""
    config = tiny_config()
    config["defaults"]["lora"]["target_modules"] = ["q_proj", "c_attn"]
    write_config(tmp_path, config)
    result = snakemake(tmp_path, "-n", check=False, env={**os.environ, "XDG_CACHE_HOME": str(tmp_path / "cache")})
    assert result.returncode != 0
    assert ("config key 'experiments.fedavg.lora.target_modules': the language model has no module named 'c_attn'"
            in result.stdout + result.stderr)
    assert not (tmp_path / "cache" / "fedumm" / "model_checks").exists()


def _experiments_in_dry_run(output: str) -> set[str]:
    return set(re.findall(r"wildcards: .*?\bexp=([^,\s]+)", output))


def test_a_user_configfile_runs_exactly_its_experiments(tmp_path):
    """The default file's experiments (fedavg, centralized, local here) do not run next to the user's."""
    write_config(tmp_path, tiny_config({"fedavg": {}, "centralized": {"kind": "centralized"}, "local": {"kind": "local"}}))
    (tmp_path / "my.yaml").write_text(
        "experiments:\n  prox:\n    train: {prox_mu: 0.01}\n  pooled: {kind: centralized}\n"
    )
    result = snakemake(tmp_path, "-n", "--configfile", "my.yaml")
    assert _experiments_in_dry_run(result.stdout) == {"prox", "pooled"}
    assert job_counts(result.stdout)["init_adapter"] == 2
    # --config still applies over the user's experiments; without a user file the defaults run
    result = snakemake(tmp_path, "-n", "--configfile", "my.yaml", "--config", "experiments={prox: {rounds: 3}}")
    assert job_counts(result.stdout)["aggregate"] == 3 + 2
    assert _experiments_in_dry_run(snakemake(tmp_path, "-n").stdout) == {"fedavg", "centralized", "local"}


def test_the_config_s_slurm_keys_become_the_rule_s_resources(tmp_path):
    """The plugin's per-rule keys pass from config.resources to the rule (tests/test_slurm_workflow.py
    checks what sbatch then receives)."""
    config = tiny_config(rounds=1)
    config["resources"]["client_train"] = {"cpus": 1, "mem_mb": 3000, "constraint": "a100", "qos": "long",
                                           "slurm_extra": "--exclusive", "gpu_model": None}
    write_config(tmp_path, config)
    result = snakemake(tmp_path, "-n", "--profile", str(REPO / "profiles" / "slurm"))
    block = result.stdout[result.stdout.index("rule client_train:"):]
    resources = next(line for line in block.splitlines() if line.strip().startswith("resources:"))
    assert "mem_mb=3000" in resources and "constraint=a100" in resources and "qos=long" in resources
    assert "slurm_extra=--exclusive" in resources and "gpu_model" not in resources
