"""Round planning: client sampling, evaluation rounds, tuning modes, baseline budgets."""

from __future__ import annotations

import copy

import pytest

from fedumm.federated import planning


@pytest.fixture
def experiment(default_config, schema):
    from fedumm.config import load_experiments

    return load_experiments(default_config, schema)["fedavg"]


def test_sampling_is_seeded_per_round_and_stable_when_rounds_grow(experiment):
    experiment.update(clients=16, clients_per_round=0.25)
    first = [planning.sampled_clients(experiment, r) for r in range(1, 5)]
    assert all(len(clients) == 4 and clients == sorted(set(clients)) for clients in first)
    assert len({tuple(c) for c in first}) > 1  # rounds draw different clients
    longer = copy.deepcopy(experiment) | {"rounds": 6}
    assert [planning.sampled_clients(longer, r) for r in range(1, 5)] == first
    reseeded = copy.deepcopy(experiment) | {"seed": 1}
    assert [planning.sampled_clients(reseeded, r) for r in range(1, 5)] != first


def test_integer_clients_per_round_is_a_count(experiment):
    experiment.update(clients=10, clients_per_round=3)
    assert len(planning.sampled_clients(experiment, 1)) == 3
    experiment.update(clients_per_round=1.0)
    assert planning.sampled_clients(experiment, 1) == list(range(10))


def test_eval_rounds(experiment):
    experiment.update(rounds=5)
    experiment["eval"]["every"] = 2
    assert planning.eval_rounds(experiment) == [0, 2, 4, 5]
    experiment["eval"]["initial"] = False
    assert planning.eval_rounds(experiment) == [2, 4, 5]


@pytest.mark.parametrize(
    ("mode", "vision", "round_index", "groups"),
    [
        ("connector", [], 1, ["connector"]),
        ("lora", [], 1, ["language"]),
        ("lora", ["q_proj"], 1, ["vision", "language"]),
        ("joint", [], 3, ["connector", "language"]),
        ("two_stage", [], 2, ["connector"]),
        ("two_stage", [], 3, ["language"]),
        ("full", [], 1, ["connector", "language"]),
    ],
)
def test_trained_groups(experiment, mode, vision, round_index, groups):
    experiment["tuning"] = {"mode": mode, "connector_rounds": 2}
    experiment["lora"]["vision_target_modules"] = vision
    assert planning.trained_groups(experiment, round_index) == groups


def test_centralized_takes_the_steps_of_all_sampled_clients(experiment):
    experiment.update(kind="centralized", clients=8, clients_per_round=0.5)
    experiment["train"].update(local_steps=None, local_epochs=1.0)
    assert planning.local_training(experiment)["local_epochs"] == pytest.approx(0.5)
    experiment["train"]["local_steps"] = 10
    assert planning.local_training(experiment)["local_steps"] == 40


def test_derived_seeds_differ_by_path():
    assert planning.derive_seed(0, "client", 1, 2) != planning.derive_seed(0, "client", 2, 1)
    assert planning.derive_seed(0, "client", 1, 2) == planning.derive_seed(0, "client", 1, 2)


def test_last_participation_follows_the_sampling(experiment):
    experiment.update(clients=8, clients_per_round=2)
    history = {r: planning.sampled_clients(experiment, r) for r in range(1, 11)}
    for k in range(8):
        for r in range(1, 11):
            earlier = [q for q in range(1, r) if k in history[q]]
            assert planning.last_participation(experiment, k, r) == (max(earlier) if earlier else None)
