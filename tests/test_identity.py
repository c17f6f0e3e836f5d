"""Run labels and the resolved config (fedumm.reports.identity)."""

from __future__ import annotations

import copy

from fedumm import config as fedumm_config
from fedumm.reports import identity


def _federated(strategy: dict, prox_mu: float = 0.0) -> dict:
    return {"kind": "federated", "strategy": strategy, "train": {"prox_mu": prox_mu, "lr": 0.001}}


def test_strategy_label_names_what_makes_the_method() -> None:
    assert identity.strategy_label(_federated({"name": "fedavg"})) == "fedavg"
    assert identity.strategy_label(_federated({"name": "fedavg"}, prox_mu=0.01)) == "fedprox (μ=0.01)"
    assert identity.strategy_label(_federated({"name": "fedadam", "eta": 0.01}, prox_mu=0.1)) == "fedadam (μ=0.1, eta=0.01)"
    assert identity.strategy_label(_federated({"name": "fedavg", "robust": {"name": "median"}})) == "fedavg + median"
    assert identity.strategy_label(_federated({"name": "fedavg", "robust": {"name": "krum", "f": 1}})) == "fedavg + krum (f=1)"
    assert identity.strategy_label(_federated({"name": "lora_fedavg", "mode": "stack"})) == "lora_fedavg (mode=stack)"
    assert identity.strategy_label({"kind": "centralized", "strategy": {"name": "fedavg"}, "train": {"prox_mu": 0}}) is None


def test_distinguishing_parameters_leave_out_the_seed_and_table_axes() -> None:
    a = {"seed": 0, "clients": 2, "partition": {"alpha": 0.1, "scheme": "dirichlet"}, "train": {"lr": 0.1}, "lora": {"r": 8}}
    b = copy.deepcopy(a) | {"seed": 3, "clients": 4, "partition": {"alpha": 1.0, "scheme": "dirichlet"}}
    assert identity.distinguishing_parameters([a, b]) == []
    c = copy.deepcopy(a) | {"lora": {"r": 16}}
    assert identity.distinguishing_parameters([a, c]) == ["lora.r"]
    assert identity.parameters_label(c, ["lora.r", "train.lr"]) == "lora.r=16, train.lr=0.1"


def test_the_resolved_config_reruns_the_experiment_alone(tmp_path) -> None:
    """Read back as a user's --configfile over the default file, it resolves to the same experiment."""
    schema = fedumm_config.load_yaml("workflow/schemas/config.schema.yaml")
    default = fedumm_config.load_yaml("config/config.yaml")
    experiments = fedumm_config.load_experiments(copy.deepcopy(default), schema)
    path = tmp_path / "config.yaml"
    identity.write_resolved_config(path, identity.resolved_config("unified", experiments["unified"], default))
    resolved = fedumm_config.read_config_file(path)
    assert sorted(resolved["datasets"]) == ["shapes_unified"] and sorted(resolved["models"]) == ["tiny_janus"]

    rerun = fedumm_config.deep_merge(default, resolved)
    fedumm_config.replace_default_experiments(rerun, [path])
    assert fedumm_config.load_experiments(rerun, schema) == {"unified": experiments["unified"]}
