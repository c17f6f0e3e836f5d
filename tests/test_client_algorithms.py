"""Client parts of strategies: SCAFFOLD, MOON, FFA-LoRA, on hand-made tensors and real client rounds."""

from __future__ import annotations

import json
import math

import pytest
import torch
from safetensors.torch import load_file, save
from test_client import EVAL, TRAIN, world  # noqa: F401  (module fixture: tiny base model, adapter, partition)

from fedumm.artifacts import CLIENT_STATE, UPLOAD_BINDING, client_index_name, file_sha256, write_weights
from fedumm.data import shards
from fedumm.federated.client import ClientInputs, ClientJob, LocalTraining, train_client
from fedumm.federated.server import aggregate_round
from fedumm.federated.strategies import build
from fedumm.federated.strategies.base import ClientUpdate
from fedumm.federated.strategies.lora import LoraFedAvg
from fedumm.federated.strategies.moon import moon_contrastive_loss
from fedumm.federated.strategies.scaffold import Scaffold, scaffold_control_update
from fedumm.models import adapters, vlm
from fedumm.models.training import OptimConfig, learning_rates

ADAPTER = "adapter_model.safetensors"
UPLOAD_CHECKS = {"norm_outlier_ratio": 10, "refuse_norm_outliers": False}


def _train(world, out: str, strategy: dict, server_state=None, previous=None, groups=("language",), start="global",
           round_index=1, **overrides):
    root = world["root"]
    inputs = ClientInputs(
        base_dir=root / "base",
        start_adapter=root / start,
        index_file=root / "index" / "client_001.json",
        shards={s: shards.split_shards(world["dataset"], s) for s in ("train", "val")},
        feature_files=world["features"],
        server_state=server_state,
        previous_client_dir=None if previous is None else root / previous,
    )
    job = ClientJob(experiment="exp", client=1, round_index=round_index, seed=7, groups=list(groups), training=LocalTraining.from_config({**TRAIN, **overrides}),
                    eval_config=EVAL, strategy=strategy)
    return train_client(inputs, job, root / out)


def _files(world, out: str) -> tuple[bytes, bytes]:
    return tuple((world["root"] / out / name).read_bytes() for name in (ADAPTER, CLIENT_STATE))


# ----------------------------------------------------------------------------- SCAFFOLD


def test_scaffold_control_variate_update_by_hand():
    x = {"a": torch.tensor([1.0, 2.0]), "b": torch.tensor([0.0])}
    y = {"a": torch.tensor([0.5, 2.5]), "b": torch.tensor([0.0])}
    c = {"a": torch.tensor([0.1, 0.2]), "b": torch.tensor([0.3])}
    c_k = {"a": torch.tensor([0.0, 1.0]), "b": torch.tensor([1.0])}
    c_plus, delta = scaffold_control_update(x, y, c, c_k, {"a"}, step_size_sum=0.5)
    # c_k − c + (x − y)/(Kη) = [0 − 0.1 + 0.5/0.5, 1 − 0.2 − 0.5/0.5]; b was not trained: c_k kept.
    torch.testing.assert_close(c_plus["a"], torch.tensor([0.9, -0.2]))
    assert torch.equal(c_plus["b"], c_k["b"])
    assert set(delta) == {"a"}
    torch.testing.assert_close(delta["a"], torch.tensor([0.9, -1.2]))


def test_scaffold_server_updates_x_and_c():
    x = {"a": torch.zeros(2)}
    updates = [
        ClientUpdate(0, {"a": torch.ones(2)}, 1, state={"a": torch.tensor([0.4, 0.0])}),
        ClientUpdate(1, {"a": torch.full((2,), 3.0)}, 3, state={"a": torch.tensor([0.0, 0.8])}),
    ]
    result = Scaffold(server_lr=0.5, num_clients=4).aggregate(x, updates, {"a": torch.tensor([1.0, 1.0])}, 2)
    # x + η_g Σ p_k (y_k − x) = 0.5 (0.25·1 + 0.75·3); c + (|S|/N)·mean Δc_k = c + (Δc_0 + Δc_1)/4.
    torch.testing.assert_close(result.weights["a"], torch.full((2,), 1.25))
    torch.testing.assert_close(result.server_state["a"], torch.tensor([1.1, 1.2]))
    # Round 1: c starts at zero; a client that trained nothing sends no Δc.
    first = Scaffold(num_clients=2).aggregate(x, [updates[0], ClientUpdate(1, x, 1)], {}, 1)
    torch.testing.assert_close(first.server_state["a"], torch.tensor([0.2, 0.0]))
    with pytest.raises(ValueError, match="client 3: control-variate delta for unknown tensor z"):
        Scaffold().aggregate(x, [ClientUpdate(3, x, 1, state={"z": torch.zeros(1)})], {}, 1)


def test_scaffold_parameters_are_checked():
    with pytest.raises(ValueError, match="server_lr must be > 0"):
        build({"name": "scaffold", "server_lr": 0})
    with pytest.raises(ValueError, match="num_clients must be a positive integer"):
        build({"name": "scaffold", "num_clients": 0})


def test_aggregate_round_passes_the_uploaded_client_state(tmp_path):
    write_weights(tmp_path / "g" / ADAPTER, {"a": torch.zeros(2)})
    (tmp_path / "g" / "adapter_config.json").write_text("{}\n")
    write_weights(tmp_path / "state0.safetensors", {})
    client = tmp_path / "c0"
    write_weights(client / ADAPTER, {"a": torch.ones(2)})
    binding = {"experiment": "exp", "round": 1, "client": 0, "start_sha256": file_sha256(tmp_path / "g" / ADAPTER),
               "weights_sha256": file_sha256(client / ADAPTER)}
    (client / "metrics.json").write_text(json.dumps({"num_samples": 4, UPLOAD_BINDING: binding}))
    (tmp_path / "partition").mkdir()
    (tmp_path / "partition" / client_index_name(0)).write_text(json.dumps({"train": ["a", "b", "c", "d"], "val": []}))
    # Only the upload part reaches the server; the local part is the client's own c_k.
    write_weights(client / CLIENT_STATE, {"upload.a": torch.tensor([0.5, 1.0]), "local.a": torch.full((2,), 9.0)})
    aggregate_round(experiment="exp", strategy_config={"name": "scaffold", "num_clients": 2}, upload_checks=UPLOAD_CHECKS,
                    round_index=1, previous_global=tmp_path / "g", previous_state=tmp_path / "state0.safetensors",
                    client_dirs={0: client}, partition_dir=tmp_path / "partition", out_dir=tmp_path / "g1",
                    state_out=tmp_path / "state1.safetensors", summary_out=tmp_path / "aggregate.json")
    torch.testing.assert_close(load_file(tmp_path / "state1.safetensors")["a"], torch.tensor([0.25, 0.5]))


def test_scaffold_with_zero_control_variates_trains_like_fedavg(world):
    plain = _train(world, "plain_fedavg", {"name": "fedavg"})
    write_weights(world["root"] / "empty_state.safetensors", {})
    scaffold = _train(world, "scaffold_zero", {"name": "scaffold"}, server_state=world["root"] / "empty_state.safetensors")
    assert _files(world, "scaffold_zero")[0] == _files(world, "plain_fedavg")[0]
    assert load_file(world["root"] / "plain_fedavg" / CLIENT_STATE) == {}

    x = load_file(world["root"] / "global" / ADAPTER)
    y = load_file(world["root"] / "scaffold_zero" / ADAPTER)
    state = load_file(world["root"] / "scaffold_zero" / CLIENT_STATE)
    rates = learning_rates(OptimConfig(lr=TRAIN["lr"]), TRAIN["local_steps"])
    trained = {name for name in x if "lora_" in name}
    assert {k for k in state if k.startswith("local.")} == {f"local.{name}" for name in x}
    assert {k for k in state if k.startswith("upload.")} == {f"upload.{name}" for name in trained}
    for name in x:  # c = c_k = 0: c_k⁺ = Δc_k = (x − y)/Σ_t η_t
        expected = (x[name] - y[name]) / sum(rates) if name in trained else torch.zeros_like(x[name])
        torch.testing.assert_close(state[f"local.{name}"], expected)
        if name in trained:
            assert torch.equal(state[f"upload.{name}"], state[f"local.{name}"])
    upload = {name: state[f"upload.{name}"] for name in trained}
    assert scaffold["bytes_uploaded"] == plain["bytes_uploaded"] + len(save(upload))


def test_scaffold_correction_changes_training_deterministically(world):
    x = load_file(world["root"] / "global" / ADAPTER)
    generator = torch.Generator().manual_seed(0)
    c = {name: 0.01 * torch.randn(t.shape, generator=generator) for name, t in x.items()}
    write_weights(world["root"] / "c_state.safetensors", c)
    previous = world["root"] / "scaffold_previous"
    write_weights(previous / ADAPTER, x)
    write_weights(previous / CLIENT_STATE, {f"local.{n}": -t for n, t in c.items()})
    runs = [_train(world, f"scaffold_{i}", {"name": "scaffold"}, server_state=world["root"] / "c_state.safetensors",
                   previous="scaffold_previous") for i in "ab"]
    assert _files(world, "scaffold_a") == _files(world, "scaffold_b")
    assert runs[0]["train_loss"] == runs[1]["train_loss"]
    plain = _train(world, "scaffold_plain_ref", {"name": "fedavg"})
    assert _files(world, "scaffold_a")[0] != _files(world, "scaffold_plain_ref")[0]
    assert plain["bytes_uploaded"] < runs[0]["bytes_uploaded"]


# ----------------------------------------------------------------------------- MOON


def test_moon_contrastive_loss_by_hand():
    z = torch.tensor([[1.0, 0.0], [1.0, 1.0]])
    z_global = torch.tensor([[2.0, 0.0], [-1.0, -1.0]])   # cosine 1, −1
    z_previous = torch.tensor([[0.0, 3.0], [2.0, 2.0]])   # cosine 0, 1
    # −log(e^{s_g/τ} / (e^{s_g/τ} + e^{s_p/τ})) = log(1 + e^{(s_p − s_g)/τ}), τ = 0.5
    expected = (math.log(1 + math.exp(-2.0)) + math.log(1 + math.exp(4.0))) / 2
    assert moon_contrastive_loss(z, z_global, z_previous, 0.5).item() == pytest.approx(expected, rel=1e-6)


def test_moon_client_training_is_deterministic_and_uses_the_previous_adapter(world):
    _train(world, "moon_previous", {"name": "fedavg"}, local_steps=2)
    plain = _train(world, "moon_plain", {"name": "fedavg"})
    first_round = _train(world, "moon_first", {"name": "moon", "mu": 5.0})
    assert _files(world, "moon_first") == _files(world, "moon_plain")  # no previous adapter: plain training
    runs = [_train(world, f"moon_{i}", {"name": "moon", "mu": 5.0}, previous="moon_previous") for i in "ab"]
    assert _files(world, "moon_a") == _files(world, "moon_b")
    assert _files(world, "moon_a")[0] != _files(world, "moon_plain")[0]
    assert runs[0]["bytes_uploaded"] == plain["bytes_uploaded"] == first_round["bytes_uploaded"]
    assert load_file(world["root"] / "moon_a" / CLIENT_STATE) == {}


def test_moon_parameters_are_checked():
    with pytest.raises(ValueError, match="temperature must be > 0"):
        build({"name": "moon", "temperature": 0})
    with pytest.raises(ValueError, match="mu must be >= 0"):
        build({"name": "moon", "mu": -1})


# ----------------------------------------------------------------------------- FFA-LoRA


def test_ffa_client_keeps_lora_a_bitwise_and_trains_b(world):
    ffa = {"name": "lora_fedavg", "mode": "ffa"}
    metrics = _train(world, "ffa_a", ffa, groups=("language", "connector"))
    _train(world, "ffa_b", ffa, groups=("language", "connector"))
    assert _files(world, "ffa_a") == _files(world, "ffa_b")
    start = load_file(world["root"] / "global" / ADAPTER)
    trained = load_file(world["root"] / "ffa_a" / ADAPTER)
    for name in start:
        if "lora_A" in name:
            assert torch.equal(trained[name], start[name]), name
        else:  # B starts at zero and moves; the connector trains in this tuning mode
            assert not torch.equal(trained[name], start[name]), name
    sent = {n: t for n, t in trained.items() if "lora_A" not in n}
    assert metrics["bytes_uploaded"] == len(save(sent))


def test_ffa_server_averages_b_keeps_a_and_refuses_a_changed_a():
    A, B = "m.lora_A.weight", "m.lora_B.weight"
    glob = {A: torch.tensor([[1.0, 2.0]]), B: torch.zeros(2, 1), "connector.0.bias": torch.zeros(2)}
    updates = [
        ClientUpdate(0, {A: glob[A].clone(), B: torch.tensor([[1.0], [2.0]]), "connector.0.bias": torch.ones(2)}, 1),
        ClientUpdate(1, {A: glob[A].clone(), B: torch.tensor([[5.0], [6.0]]), "connector.0.bias": torch.zeros(2)}, 3),
    ]
    result = LoraFedAvg(mode="ffa").aggregate(glob, updates, {}, 1)
    assert torch.equal(result.weights[A], glob[A])
    torch.testing.assert_close(result.weights[B], torch.tensor([[4.0], [5.0]]))
    torch.testing.assert_close(result.weights["connector.0.bias"], torch.full((2,), 0.25))
    assert result.metrics["lora"]["fedit_error_relative"] < 1e-12  # a shared A makes B̄A the exact mean product
    changed = ClientUpdate(7, {**updates[0].weights, A: torch.tensor([[1.0, 2.5]])}, 1)
    with pytest.raises(ValueError, match=r"client 7: .*ffa keeps LoRA A frozen.*m\.lora_A\.weight"):
        LoraFedAvg(mode="ffa").aggregate(glob, [updates[1], changed], {}, 1)


# ----------------------------------------------------------------------------- FLoRA


def _aggregate(world, strategy: dict, round_index: int, previous: str, client: str, out: str) -> dict:
    root = world["root"]
    return aggregate_round(
        experiment="exp", strategy_config=strategy, upload_checks=UPLOAD_CHECKS, round_index=round_index,
        previous_global=root / previous, previous_state=root / "state.safetensors", client_dirs={1: root / client},
        partition_dir=root / "index", out_dir=root / out, state_out=root / f"{out}_state.safetensors",
        summary_out=root / f"{out}.json",
    )


def test_flora_global_adapter_reproduces_the_client_model_after_two_rounds(world):
    """Round 2's stacked global adapter, loaded with plain peft, is the client's model: the
    round-1 global merged into the base plus the client's fresh rank-2 adapter."""
    from fedumm.federated.strategies.lora import FreshLoraOnGlobal

    stack = {"name": "lora_fedavg", "mode": "stack", "client_rank": 2}
    root = world["root"]
    _train(world, "flora_c1", stack, groups=("language", "connector"))
    summary = _aggregate(world, stack, 1, "global", "flora_c1", "flora_g1")
    metrics = _train(world, "flora_c2", stack, groups=("language", "connector"), start="flora_g1", round_index=2)
    _aggregate(world, stack, 2, "flora_g1", "flora_c2", "flora_g2")

    config = lambda d: json.loads((root / d / "adapter_config.json").read_text())  # noqa: E731
    # Client rank 2 with the experiment's scaling alpha/r = 8/4: round 1 keeps only the client
    # block (the round-0 B is zero), round 2 stacks another one onto it.
    assert (config("flora_c2")["r"], config("flora_c2")["lora_alpha"]) == (2, 4)
    assert (config("flora_g1")["r"], config("flora_g1")["lora_alpha"]) == (2, 4)
    assert (config("flora_g2")["r"], config("flora_g2")["lora_alpha"]) == (4, 8)
    assert summary["lora_rank"] == 2
    uploaded = load_file(root / "flora_c2" / ADAPTER)
    assert metrics["bytes_uploaded"] == len(save(uploaded))  # everything is trained, nothing frozen

    base, _, _ = vlm.load_base(root / "base")
    client_model = FreshLoraOnGlobal(rank=2, seed=0).load_model(base, root / "flora_g1")
    adapters.set_adapter_state(client_model, uploaded)
    global_model = adapters.load_adapter(vlm.load_base(root / "base")[0], root / "flora_g2", is_trainable=False)
    generator = torch.Generator().manual_seed(0)
    batch = {"input_ids": torch.randint(4, 20, (2, 6), generator=generator),
             "attention_mask": torch.ones(2, 6, dtype=torch.long),
             "pixel_values": torch.randn(2, 3, 64, 64, generator=generator)}
    with torch.no_grad():
        expected = client_model.eval()(**batch).logits
        actual = global_model.eval()(**batch).logits
    assert not torch.allclose(expected, vlm.load_base(root / "base")[0](**batch).logits, atol=1e-3)
    torch.testing.assert_close(actual, expected, rtol=0, atol=1e-5)


def test_adapter_parameters_map_to_the_saved_keys(world):
    base, _, _ = vlm.load_base(world["root"] / "base")
    peft_model = adapters.load_adapter(base, world["root"] / "global", is_trainable=True)
    params = adapters.adapter_parameters(peft_model)
    state = adapters.adapter_state(peft_model)
    assert set(params) == set(state)
    assert all(torch.equal(params[name].detach(), state[name]) for name in state)


# ----------------------------------------------------------------------------- config


def test_scaffold_num_clients_is_filled_in_and_local_kind_is_refused(default_config, schema):
    from fedumm.config import ConfigError, load_experiments

    default_config["experiments"] = {"sc": {"clients": 8, "clients_per_round": 2, "strategy": {"name": "scaffold"}}}
    assert load_experiments(default_config, schema)["sc"]["strategy"]["num_clients"] == 8
    default_config["experiments"] = {"sc": {"kind": "local", "strategy": {"name": "scaffold"}}}
    with pytest.raises(ConfigError, match="config key 'experiments.sc.strategy': .*the local kind has no server"):
        load_experiments(default_config, schema)
