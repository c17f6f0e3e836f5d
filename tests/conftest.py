"""Shared fixtures: the repository's config and schema."""

from __future__ import annotations

import copy
from pathlib import Path

import pytest

from fedumm import config as fedumm_config

REPO = Path(__file__).resolve().parents[1]


# The modules that run whole workflows, longest first (measured on 2 cores: test_workflow ~19 min of
# one worker, test_attack_workflow ~14, ...). `make test` hands whole files to two workers in
# collection order (`--dist loadfile --no-loadscope-reorder`); starting the longest first and
# leaving the many short unit-test files to fill the gaps keeps one worker from finishing a long
# file alone at the end (longest-processing-time-first scheduling).
LONGEST_FIRST = (
    "test_workflow.py", "test_attack_workflow.py", "test_strategies_workflow.py", "test_hf_families_workflow.py",
    "test_unified_workflow.py", "test_slurm_workflow.py", "test_tracking_workflow.py", "test_datasets_workflow.py",
)


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    rank = {name: index for index, name in enumerate(LONGEST_FIRST)}
    items.sort(key=lambda item: rank.get(item.path.name, len(rank)))


@pytest.fixture(scope="session")
def schema() -> dict:
    return fedumm_config.load_yaml(REPO / "workflow" / "schemas" / "config.schema.yaml")


@pytest.fixture
def default_config() -> dict:
    return copy.deepcopy(fedumm_config.load_yaml(REPO / "config" / "config.yaml"))
from slurm_cluster import slurm_cluster  # noqa: F401,E402  (session fixture: a private single-node SLURM cluster)
