"""Full fine-tuning as dense deltas (``tuning.mode: full``, `fedumm.models.dense`): the round-0
delta, one client round on real files, the server's average, evaluation and export."""

from __future__ import annotations

import json

import pytest
import torch
from safetensors.torch import load_file
from workflow_util import client_world

from fedumm.data import shards
from fedumm.evaluation.evaluate import each_adapter
from fedumm.federated.client import ClientInputs, ClientJob, LocalTraining, train_client
from fedumm.models import adapters, dense
from fedumm.models.groups import parameter_group
from fedumm.models.vlm import load_base

TRAIN = {"lr": 0.01, "weight_decay": 0.0, "warmup_ratio": 0.0, "local_epochs": 1, "local_steps": 3,
         "batch_size": 8, "grad_clip": 1.0, "prox_mu": 0.0}
EVAL = {"batch_size": 32, "max_new_tokens": 3}
LORA = {"r": 4, "alpha": 8, "dropout": 0.0, "target_modules": ["q_proj"], "vision_target_modules": []}


@pytest.fixture(scope="module")
def world(tmp_path_factory) -> dict:
    root = tmp_path_factory.mktemp("dense")
    dataset, _ = client_world(root, {"public": 32, "train": 32, "val": 8, "test": 8}, pretrain_steps=2, lora=LORA,
                              full=True)
    for client in (0, 1):
        inputs = ClientInputs(base_dir=root / "base", start_adapter=root / "global",
                              index_file=root / "index" / f"client_{client:03d}.json",
                              shards={s: shards.split_shards(dataset, s) for s in ("train", "val")})
        job = ClientJob(experiment="exp", client=client, round_index=1, seed=7 + client, groups=["connector", "language"],
                        training=LocalTraining.from_config(TRAIN), eval_config=EVAL)
        train_client(inputs, job, root / f"client_{client}")
    return {"root": root}


def test_round_zero_is_a_zero_delta_of_every_connector_and_language_weight(world):
    root = world["root"]
    assert dense.is_dense(root / "global")
    config = json.loads((root / "global/adapter_config.json").read_text())
    assert config[dense.DENSE_CONFIG_KEY] == {"groups": ["connector", "language"]}
    delta = load_file(root / "global/adapter_model.safetensors")
    vlm, _, _ = load_base(root / "base")
    expected = {name: param.shape for name, param in vlm.named_parameters()
                if name.split(".")[0] in ("connector", "language_model")}
    assert {name: tensor.shape for name, tensor in delta.items()} == expected
    assert all(not tensor.any() for tensor in delta.values())


def test_a_client_trains_and_uploads_every_weight_of_its_groups_as_a_delta(world):
    root = world["root"]
    metrics = json.loads((root / "client_0/metrics.json").read_text())
    delta = load_file(root / "client_0/adapter_model.safetensors")
    assert metrics["trained_groups"] == ["connector", "language"] and metrics["steps"] == 3
    moved = [name for name, tensor in delta.items() if tensor.any()]
    # every weight matrix of the language model and the connector moves in three Adam steps
    assert {name for name in delta if name.endswith("weight") and "norm" not in name} <= set(moved)
    assert {parameter_group(name) for name in delta} == {"connector", "language"}
    dense_bytes = sum(t.numel() * t.element_size() for t in delta.values())
    assert dense_bytes <= metrics["bytes_uploaded"] < dense_bytes + 64 * 1024

    # Δ is exactly what training changed: base + Δ reproduces the trained weights
    vlm, _, _ = load_base(root / "base")
    model = adapters.load_adapter(vlm, root / "client_0", is_trainable=False)
    assert isinstance(model, dense.DenseDelta)
    base, _, _ = load_base(root / "base")
    base_params = dict(base.named_parameters())
    for name, param in vlm.named_parameters():
        expected = base_params[name].detach() + delta[name] if name in delta else base_params[name].detach()
        assert torch.equal(param.detach(), expected), name


def test_each_adapter_switches_deltas_on_one_base_model(world):
    root = world["root"]
    vlm, _, _ = load_base(root / "base")
    seen = {}
    for name, model in each_adapter(vlm, {"a": root / "client_0", "b": root / "client_1", "c": root / "client_0"},
                                    torch.device("cpu")):
        seen[name] = {key: value.clone() for key, value in adapters.adapter_state(model).items()}
    expected = load_file(root / "client_0/adapter_model.safetensors")
    assert all(torch.allclose(seen["a"][key], expected[key], atol=1e-6) for key in expected)
    assert all(torch.allclose(seen["c"][key], seen["a"][key], atol=1e-6) for key in expected)
    assert any(not torch.allclose(seen["b"][key], seen["a"][key]) for key in expected)


def test_dense_files_are_byte_deterministic_and_refuse_foreign_keys(world, tmp_path):
    root = world["root"]
    vlm, _, _ = load_base(root / "base")
    model = adapters.load_adapter(vlm, root / "client_1", is_trainable=False)
    adapters.save_adapter(model, tmp_path / "again")
    for name in ("adapter_model.safetensors", "adapter_config.json"):
        assert (tmp_path / "again" / name).read_bytes() == (root / "client_1" / name).read_bytes()
    state = load_file(root / "client_1/adapter_model.safetensors")
    state["vision_tower.extra"] = torch.zeros(1)
    with pytest.raises(ValueError, match=r"dense delta mismatch: missing \[\], unexpected \['vision_tower.extra'\]"):
        adapters.set_adapter_state(model, state)
