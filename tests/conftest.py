"""Shared fixtures: the repository's config and schema."""

from __future__ import annotations

import copy
from pathlib import Path

import pytest

from fedumm import config as fedumm_config

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="session")
def schema() -> dict:
    return fedumm_config.load_yaml(REPO / "workflow" / "schemas" / "config.schema.yaml")


@pytest.fixture
def default_config() -> dict:
    return copy.deepcopy(fedumm_config.load_yaml(REPO / "config" / "config.yaml"))
from slurm_cluster import slurm_cluster  # noqa: F401,E402  (session fixture: a private single-node SLURM cluster)
