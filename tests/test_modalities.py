"""Per-modality adapters (FedUMM §3.4): the server aggregates understanding and generation tensors
separately, each weighted by the clients' example counts of that modality; batches keep to one modality."""

from __future__ import annotations

import pytest
import torch

from fedumm.artifacts import GENERATION_IDS
from fedumm.federated import strategies
from fedumm.federated.modalities import aggregate_by_modality, keys_by_modality
from fedumm.federated.strategies.base import ClientUpdate
from fedumm.models.batches import modality_batches, shuffled_batches
from fedumm.partition.rounds import round_modality_sizes

LANGUAGE = "base_model.model.model.language_model.layers.0.self_attn.q_proj.lora_B.weight"
GENERATION = "base_model.model.model.generation_head.proj_out.weight"


def _update(k: int, language: float, generation: float) -> ClientUpdate:
    return ClientUpdate(client=k, weights={LANGUAGE: torch.tensor([language]), GENERATION: torch.tensor([generation])},
                        num_samples=0)


def test_each_modality_is_averaged_over_the_clients_that_hold_it_by_their_count_of_it() -> None:
    global_weights = {LANGUAGE: torch.tensor([0.0]), GENERATION: torch.tensor([0.0])}
    updates = [_update(0, 1.0, 100.0), _update(1, 3.0, 2.0), _update(2, 50.0, 4.0)]
    sizes = {0: {"understanding": 10, "generation": 0},   # no text-to-image data: its generation tensor is ignored
             1: {"understanding": 30, "generation": 30},
             2: {"understanding": 0, "generation": 10}}   # no understanding data
    result = aggregate_by_modality(strategies.build({"name": "fedavg"}), global_weights, updates, {}, 1, sizes)
    assert result.weights[LANGUAGE].item() == pytest.approx((10 * 1.0 + 30 * 3.0) / 40)
    assert result.weights[GENERATION].item() == pytest.approx((30 * 2.0 + 10 * 4.0) / 40)
    assert result.metrics["modalities"] == {
        "understanding": {"clients": [0, 1], "num_samples": {"0": 10, "1": 30}},
        "generation": {"clients": [1, 2], "num_samples": {"1": 30, "2": 10}},
    }


def test_a_modality_nobody_holds_keeps_its_tensors_and_state_and_server_optimizers_split_their_state() -> None:
    strategy = strategies.build({"name": "fedadam", "eta": 0.1})
    global_weights = {LANGUAGE: torch.tensor([1.0]), GENERATION: torch.tensor([2.0])}
    updates = [_update(0, 2.0, 5.0), _update(1, 4.0, 7.0)]
    both = {0: {"understanding": 1, "generation": 1}, 1: {"understanding": 3, "generation": 1}}
    first = aggregate_by_modality(strategy, global_weights, updates, {}, 1, both)
    # FedAdam on each modality alone gives the same tensors and moments.
    alone = strategy.aggregate({LANGUAGE: global_weights[LANGUAGE]},
                               [ClientUpdate(u.client, {LANGUAGE: u.weights[LANGUAGE]}, both[u.client]["understanding"])
                                for u in updates], {}, 1)
    assert torch.equal(first.weights[LANGUAGE], alone.weights[LANGUAGE])
    assert torch.equal(first.server_state[f"m/{LANGUAGE}"], alone.server_state[f"m/{LANGUAGE}"])
    assert set(first.server_state) == set(alone.server_state) | {f"m/{GENERATION}", f"v/{GENERATION}"}

    only_understanding = {0: {"understanding": 1, "generation": 0}, 1: {"understanding": 3, "generation": 0}}
    second = aggregate_by_modality(strategy, first.weights, updates, first.server_state, 2, only_understanding)
    assert torch.equal(second.weights[GENERATION], first.weights[GENERATION])
    for slot in ("m", "v"):
        assert torch.equal(second.server_state[f"{slot}/{GENERATION}"], first.server_state[f"{slot}/{GENERATION}"])
    assert not torch.equal(second.weights[LANGUAGE], first.weights[LANGUAGE])
    assert second.server_state["t"].item() == first.server_state["t"].item() + 1
    assert second.metrics["modalities"]["generation"] == {"clients": [], "num_samples": {}}


def test_an_adapter_of_one_modality_is_the_strategys_plain_call() -> None:
    strategy = strategies.build({"name": "fedavg"})
    updates = [ClientUpdate(k, {LANGUAGE: torch.tensor([float(k)])}, 0) for k in range(2)]
    sizes = {0: {"understanding": 1, "generation": 9}, 1: {"understanding": 3, "generation": 0}}
    result = aggregate_by_modality(strategy, {LANGUAGE: torch.zeros(1)}, updates, {}, 1, sizes)
    plain = strategy.aggregate({LANGUAGE: torch.zeros(1)}, [ClientUpdate(0, updates[0].weights, 1),
                                                            ClientUpdate(1, updates[1].weights, 3)], {}, 1)
    assert torch.equal(result.weights[LANGUAGE], plain.weights[LANGUAGE])
    assert keys_by_modality({LANGUAGE: 0, GENERATION: 0, "toy": 0}) == {"understanding": [LANGUAGE, "toy"],
                                                                         "generation": [GENERATION]}


def test_the_partition_index_gives_the_counts_per_modality_per_round() -> None:
    index = {"client": 0, "train": ["a", "b", "c", "d"], GENERATION_IDS: ["b", "d"],
             "train_rounds": [["a", "b"], ["c"]]}
    assert round_modality_sizes(index, 1) == {"understanding": 1, "generation": 1}
    assert round_modality_sizes(index, 2) == {"understanding": 1, "generation": 0}
    assert round_modality_sizes({"train": ["a"]}, 1) == {"understanding": 1, "generation": 0}


def test_modality_batches_keep_to_one_modality_and_equal_shuffled_batches_for_one() -> None:
    modalities = ["understanding"] * 37 + ["generation"] * 13
    drawn = list(modality_batches(modalities, 8, 30, seed=4))
    assert len(drawn) == 30
    assert all(len({modalities[i] for i in batch}) == 1 for batch in drawn)
    per_pass = 5 + 2  # ceil(37 / 8) + ceil(13 / 8) batches cover every example once
    assert sorted(i for batch in drawn[:per_pass] for i in batch) == list(range(50))
    assert drawn == list(modality_batches(modalities, 8, 30, seed=4))
    assert list(modality_batches(["understanding"] * 20, 8, 6, seed=4)) == list(shuffled_batches(20, 8, 6, seed=4))
