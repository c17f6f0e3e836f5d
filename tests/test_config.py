"""Config validation: every mistake is reported with the key that causes it."""

from __future__ import annotations

import pytest

from fedumm.config import ConfigError, config_hash, deep_merge, load_experiments


def test_default_config_resolves_three_experiments(default_config, schema):
    experiments = load_experiments(default_config, schema)
    assert sorted(experiments) == ["centralized", "fedavg", "local"]
    assert experiments["centralized"]["kind"] == "centralized"
    assert experiments["fedavg"]["partition"] == default_config["defaults"]["partition"]


@pytest.mark.parametrize(
    ("mutate", "message"),
    [
        (lambda c: c["defaults"].update(alhpa=1), r"'defaults': unknown key 'alhpa'"),
        (lambda c: c["experiments"]["fedavg"].update(strategy={"name": "fedfoo"}),
         r"'experiments.fedavg.strategy': unknown strategy 'fedfoo'"),
        (lambda c: c["experiments"]["fedavg"].update(strategy={"name": "fedavg", "eta": 1}),
         r"'experiments.fedavg.strategy': unknown parameter\(s\) eta"),
        (lambda c: c["experiments"]["fedavg"].update(partition={"alpha": 0}),
         r"'experiments.fedavg.partition.alpha': 0 is less than or equal to the minimum of 0"),
        (lambda c: c["experiments"]["fedavg"].update(partition={"alpha": -1.5}),
         r"'experiments.fedavg.partition.alpha'"),
        (lambda c: c["experiments"]["fedavg"].update(clients=5000),
         r"'experiments.fedavg.clients': 5000 clients but dataset 'shapes' has only 2000 training samples; "
         r"every client needs one, so use at most 2000 clients or a larger train split"),
        (lambda c: c["experiments"]["fedavg"].update(partition={"min_size": 0}),
         r"'experiments.fedavg.partition.min_size': 0 is less than the minimum of 1"),
        (lambda c: c["experiments"]["fedavg"].update(partition={"scheme": "iid", "min_size": 501}),
         r"'experiments.fedavg.partition.min_size': 4 clients × min_size 501 exceeds the 2000 training samples; "
         r"lower min_size or use fewer clients"),
        (lambda c: c["experiments"]["fedavg"].update(clients_per_round=9),
         r"'experiments.fedavg.clients_per_round': 9 exceeds clients=4"),
        (lambda c: c["experiments"]["fedavg"].update(dataset="vqa"),
         r"'experiments.fedavg.dataset': unknown dataset 'vqa'"),
        (lambda c: c["experiments"]["fedavg"].update(tuning={"mode": "two_stage", "connector_rounds": 4}),
         r"'experiments.fedavg.tuning.connector_rounds'"),
        (lambda c: c["models"]["tiny"].update(connector="mlp2x_relu"), r"'models.tiny.connector'"),
        (lambda c: c["defaults"].pop("rounds"), r"experiment 'fedavg' .*'<top level>': 'rounds' is a required"),
    ],
)
def test_config_errors_name_the_key(default_config, schema, mutate, message):
    mutate(default_config)
    with pytest.raises(ConfigError, match=message):
        load_experiments(default_config, schema)


def test_sweep_expands_the_product(default_config, schema):
    default_config["experiments"] = {}
    default_config["sweep"] = {"clients": [2, 4], "alpha": [0.1, 1.0], "strategy": ["fedavg"], "seed": [0, 1]}
    experiments = load_experiments(default_config, schema)
    assert len(experiments) == 8
    chosen = experiments["sweep_c2_a0.1_fedavg_s1"]
    assert (chosen["clients"], chosen["partition"]["alpha"], chosen["seed"]) == (2, 0.1, 1)


def test_deep_merge_replaces_strategy_whole():
    merged = deep_merge({"train": {"lr": 1, "wd": 2}, "strategy": {"name": "a", "x": 1}},
                       {"train": {"lr": 3}, "strategy": {"name": "b"}})
    assert merged == {"train": {"lr": 3, "wd": 2}, "strategy": {"name": "b"}}


def test_config_hash_is_stable_and_sensitive():
    assert config_hash({"a": 1, "b": 2}) == config_hash({"b": 2, "a": 1})
    assert config_hash({"a": 1}) != config_hash({"a": 2})


def test_dp_sampling_rate_follows_the_client_sampling(default_config, schema):
    default_config["experiments"] = {
        "dp": {"clients": 8, "clients_per_round": 2,
               "strategy": {"name": "dp_fedavg", "clip_norm": 1.0, "noise_multiplier": 1.0, "delta": 1e-5}}
    }
    assert load_experiments(default_config, schema)["dp"]["strategy"]["sampling_rate"] == 0.25
