"""What `snakemake -n` itself must decide about a config: the checks that need Snakemake (its YAML
loading, --config overrides, wildcards) rather than fedumm.config alone, which tests/test_config.py covers."""

from __future__ import annotations

import re

import pytest
from workflow_util import job_counts, snakemake, tiny_config, write_config

pytestmark = pytest.mark.slow


def test_1200_rounds_build_their_dag(tmp_path):
    """Rounds past 999 are round_1000, round_1001, ...; round 0 still comes from init_adapter only."""
    config = tiny_config(rounds=1200, clients=2)
    config["defaults"]["eval"].update(every=1200)
    write_config(tmp_path, config)
    dry = snakemake(tmp_path, "-n").stdout
    counts = job_counts(dry)
    assert counts["client_train"] == 2 * 1200
    assert counts["aggregate"] == 1200
    assert counts["evaluate"] == 2  # round 0 and the last round
    assert counts["init_adapter"] == 1
    rounds = {int(r) for r in re.findall(r"results/fedavg/round_(\d+)/global/adapter_model", dry)}
    assert rounds == set(range(1201))
    names = set(re.findall(r"round_(\d+)/", dry))
    assert {"000", "999", "1000", "1200"} <= names and not any(len(n) > 3 and n.startswith("0") for n in names)
