"""The dag benchmark's parts: its grids, the bare workflow of the same shape, the import-time parsing."""

from __future__ import annotations

import os
from pathlib import Path

from fedumm import dag_bench

REPO = Path(__file__).resolve().parents[1]


def test_the_table1_grid_is_the_default_experiments_plus_24_swept_ones() -> None:
    shape = dag_bench.bare_experiments(dag_bench.table1_config(REPO, 30))
    assert len(shape) == 3 + 8 * 3
    assert shape["sweep_c16_a0.1_fedavg_s0"] == {"clients": 16, "rounds": 30, "eval_rounds": [0, 10, 20, 30]}
    assert shape["centralized"]["clients"] == 1
    assert dag_bench.bare_experiments(dag_bench.long_config(REPO, 999))["local"]["clients"] == 16


def test_the_bare_workflows_have_the_jobs_of_fedumm_s_rounds(tmp_path) -> None:
    config = dag_bench.long_config(REPO, 2, clients=2)  # fedavg and local: 2 clients, centralized: 1
    runs = dag_bench.measure_grid({"config": config, "repo": REPO}, 1, {**os.environ, "PYTHONPATH": str(REPO)},
                                  directives=True)
    jobs = {name: results[0].jobs for name, results in runs.items()}
    # per experiment: init, 2 rounds of (clients + aggregate), evaluations of rounds 0 and 2; then `all`
    assert jobs["bare"] == jobs["bare + directives"] == jobs["bare + directives, 1 output"] == (
        (1 + 2 * 3 + 2) * 2 + (1 + 2 * 2 + 2) + 1
    )
    # the same without the local kind's aggregates, plus partition and experiment_tables per
    # experiment, shapes_data, base_model, features (3 splits), summary and paper_tables
    assert jobs["fedumm"] == jobs["bare"] - 2 + 2 * 3 + 1 + 1 + 3 + 1 + 1


def test_rule_scripts_and_their_imports() -> None:
    scripts = dag_bench.rule_scripts(REPO)
    assert scripts["client_train.py"] == ["client_train"]
    assert scripts["partition.py"] == ["partition", "partition_projected"]
    assert "from fedumm.federated.server import aggregate_round" in dag_bench.top_level_imports(
        REPO / "scripts" / "aggregate.py"
    )


def test_import_times_reads_python_s_importtime_report() -> None:
    total, packages = dag_bench.import_times("import json", {**os.environ})
    assert total > 0 and packages == {}


def test_job_total() -> None:
    assert dag_bench.job_total("Job stats:\njob    count\n---  ---\na    2\ntotal    7\n") == 7
