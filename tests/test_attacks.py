"""Simulated byzantine clients: what each attack uploads, who attacks, and exclusions from a round."""

from __future__ import annotations

import math

import pytest
import torch

from fedumm.config import ConfigError, load_experiments
from fedumm.federated import attacks, planning

START = {"a": torch.tensor([1.0, 2.0]), "frozen": torch.tensor([5.0])}
TRAINED = {"a": torch.tensor([1.5, 1.0]), "frozen": torch.tensor([5.0])}  # Δ = (0.5, −1)


def _attack(kind: str, **params) -> dict:
    return attacks.client_attack({"kind": kind, "clients": [0], **params}, [0], 0, 1)


@pytest.mark.parametrize(
    ("kind", "params", "expected_a"),
    [
        ("sign_flip", {}, [0.5, 3.0]),                 # Δ' = −Δ
        ("sign_flip", {"scale": 10.0}, [-4.0, 12.0]),  # Δ' = −10Δ
        ("scale", {}, [6.0, -8.0]),                    # default ×10
        ("constant", {"value": 0.25}, [1.25, 2.25]),
    ],
)
def test_update_attacks_change_the_trained_tensors_only(kind, params, expected_a):
    uploaded = attacks.attacked_update(START, TRAINED, _attack(kind, **params), seed=1, round_seed=2)
    torch.testing.assert_close(uploaded["a"], torch.tensor(expected_a))
    assert torch.equal(uploaded["frozen"], START["frozen"])  # not trained: left as it was


def test_gaussian_attack_draws_from_its_seed_with_the_given_std():
    big_start = {"a": torch.zeros(20_000)}
    big_trained = {"a": torch.full((20_000,), 0.1)}
    attack = _attack("gaussian", std=0.5)
    first = attacks.attacked_update(big_start, big_trained, attack, seed=1, round_seed=0)["a"]
    again = attacks.attacked_update(big_start, big_trained, attack, seed=1, round_seed=0)["a"]
    other = attacks.attacked_update(big_start, big_trained, attack, seed=2, round_seed=0)["a"]
    assert torch.equal(first, again) and not torch.equal(first, other)
    assert abs(float(first.std()) - 0.5) < 0.01 and abs(float(first.mean())) < 0.01


def test_colluders_share_one_direction_at_their_own_norm():
    start = {"a": torch.zeros(3), "b": torch.zeros(2)}
    honest_1 = {"a": torch.tensor([1.0, 0.0, 0.0]), "b": torch.zeros(2)}  # norm 1
    honest_2 = {"a": torch.tensor([0.0, 3.0, 0.0]), "b": torch.tensor([0.0, 4.0])}  # norm 5
    attack = _attack("collude")
    up_1 = attacks.attacked_update(start, honest_1, attack, seed=1, round_seed=9)
    up_2 = attacks.attacked_update(start, honest_2, attack, seed=2, round_seed=9)
    # b did not change for the first colluder, so it pushes only along a.
    assert torch.equal(up_1["b"], torch.zeros(2))
    assert math.isclose(float(up_1["a"].norm()), 1.0, rel_tol=1e-6)
    flat_2 = torch.cat([up_2["a"], up_2["b"]])
    assert math.isclose(float(flat_2.norm()), 5.0, rel_tol=1e-6)
    # The same direction on a: the second's a-part is a positive multiple of the first's.
    cosine = float(torch.nn.functional.cosine_similarity(up_1["a"], up_2["a"], dim=0))
    assert cosine == pytest.approx(1.0)


def test_label_flip_is_a_seeded_derangement_of_the_clients_answers():
    records = [{"id": str(i), "multiple_choice_answer": answer} for i, answer in enumerate("aabcdd")]
    flipped = attacks.flipped_labels(records, seed=3)
    mapping = {r["multiple_choice_answer"]: f["multiple_choice_answer"] for r, f in zip(records, flipped)}
    assert sorted(mapping) == sorted(mapping.values()) == ["a", "b", "c", "d"]  # a permutation
    assert all(source != target for source, target in mapping.items())       # with no fixed point
    assert flipped == attacks.flipped_labels(records, seed=3)
    with pytest.raises(ValueError, match="at least two distinct answers"):
        attacks.flipped_labels(records[:2], seed=0)


def test_attackers_by_ids_or_by_a_seeded_fraction_from_their_round():
    experiment = {"kind": "federated", "seed": 0, "clients": 8,
                  "attack": {"kind": "sign_flip", "fraction": 0.25, "from_round": 2}}
    chosen = [k for k in range(8) if planning.client_attack(experiment, k, 2)]
    assert len(chosen) == 2 and all(planning.client_attack(experiment, k, 1) is None for k in range(8))
    assert chosen == [k for k in range(8) if planning.client_attack({**experiment}, k, 5)]
    other_seed = [k for k in range(8) if planning.client_attack({**experiment, "seed": 1}, k, 2)]
    assert len(other_seed) == 2
    by_id = {"kind": "federated", "seed": 0, "clients": 8, "attack": {"kind": "scale", "clients": [3, 5]}}
    assert planning.client_attack(by_id, 3, 1) == {"kind": "scale", "scale": 10.0}
    assert planning.client_attack(by_id, 4, 1) is None


def test_exclusion_removes_a_client_from_one_round_after_the_draw():
    experiment = {"kind": "federated", "seed": 0, "clients": 6, "clients_per_round": 4,
                  "exclude": [{"round": 2, "clients": [planning.sampled_clients({"kind": "federated", "seed": 0, "clients": 6,
                                                                                 "clients_per_round": 4}, 2)[0]]}]}
    plain = {**experiment, "exclude": []}
    dropped = experiment["exclude"][0]["clients"][0]
    assert planning.sampled_clients(experiment, 2) == [k for k in planning.sampled_clients(plain, 2) if k != dropped]
    assert planning.sampled_clients(experiment, 3) == planning.sampled_clients(plain, 3)
    everyone = {**plain, "exclude": [{"round": 2, "clients": planning.sampled_clients(plain, 2)}]}
    with pytest.raises(ConfigError, match=r"config key 'experiments.x.exclude\[0\]': round 2 samples clients .* "
                                          r"excluding them all leaves nothing to aggregate"):
        planning.check_exclusions("x", everyone)


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"attack": {"kind": "sign_flip", "clients": [9]}}, r"'experiments.x.attack.clients': no client 9 \(clients are 0..3\)"),
        ({"attack": {"kind": "sign_flip", "fraction": 1.0}}, r"'experiments.x.attack': all 4 clients would attack"),
        ({"attack": {"kind": "gaussian", "clients": [0], "scale": 2}}, r"'experiments.x.attack.scale': not a parameter of the gaussian attack \(its parameters: std\)"),
        ({"attack": {"kind": "sign_flip", "clients": [0], "from_round": 9}}, r"'experiments.x.attack.from_round': past the last round"),
        ({"kind": "centralized", "attack": {"kind": "sign_flip", "clients": [0]}}, r"'experiments.x.attack': .*the centralized kind has no server"),
        ({"exclude": [{"round": 7, "clients": [0]}]}, r"'experiments.x.exclude\[0\].round': round 7 is past the last round \(3\)"),
        ({"exclude": [{"round": 1, "clients": [4]}]}, r"'experiments.x.exclude\[0\].clients': no client 4"),
        ({"kind": "local", "exclude": [{"round": 1, "clients": [0]}]}, r"'experiments.x.exclude': the local kind has no federation"),
        ({"clients": 5, "strategy": {"name": "fedavg", "robust": {"name": "krum", "f": 1}}, "exclude": [{"round": 1, "clients": [0]}]},
         r"'experiments.x.strategy.robust.f': krum with f=1 needs more than 2f \+ 2 = 4 clients aggregated per round, "
         r"and clients_per_round gives 5 of the 5 clients, 4 after the 1 excluded from a round"),
        ({"strategy": {"name": "scaffold", "robust": {"name": "median"}}},
         r"'experiments.x.strategy': strategy 'scaffold' does not compose with a robust rule: its control variates"),
        ({"strategy": {"name": "dp_fedavg", "robust": {"name": "median"}}},
         r"'experiments.x.strategy': strategy 'dp_fedavg' does not compose with a robust rule: its privacy accounting"),
    ],
)
def test_attack_exclude_and_robust_config_errors_name_the_key(default_config, schema, overrides, message):
    default_config["experiments"] = {"x": overrides}
    with pytest.raises(ConfigError, match=message):
        load_experiments(default_config, schema)
