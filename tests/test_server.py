"""Aggregation rounds on files: FedAvg, refusal of bad uploads, deterministic outputs."""

from __future__ import annotations

import json
import pickle
from pathlib import Path

import pytest
import torch

from fedumm.artifacts import read_weights, write_weights
from fedumm.federated import strategies
from fedumm.federated.server import UpdateRejected, aggregate_round
from fedumm.federated.strategies.base import ClientUpdate


def _global(tmp_path: Path, weights: dict[str, torch.Tensor]) -> Path:
    directory = tmp_path / "round_000" / "global"
    write_weights(directory / "adapter_model.safetensors", weights)
    (directory / "adapter_config.json").write_text('{"r": 2}\n')
    write_weights(tmp_path / "round_000" / "server_state.safetensors", {})
    return directory


def _client(tmp_path: Path, k: int, weights: dict[str, torch.Tensor], num_samples: int) -> Path:
    directory = tmp_path / "round_001" / "clients" / str(k)
    write_weights(directory / "adapter_model.safetensors", weights)
    (directory / "metrics.json").write_text(json.dumps({"num_samples": num_samples, "bytes_uploaded": 100}))
    return directory


def _run(tmp_path: Path, clients: dict[int, Path], strategy=None) -> dict:
    return aggregate_round(
        strategy_config=strategy or {"name": "fedavg"},
        round_index=1,
        previous_global=tmp_path / "round_000" / "global",
        previous_state=tmp_path / "round_000" / "server_state.safetensors",
        client_dirs=clients,
        out_dir=tmp_path / "round_001" / "global",
        state_out=tmp_path / "round_001" / "server_state.safetensors",
        summary_out=tmp_path / "round_001" / "aggregate.json",
    )


def test_fedavg_weights_by_examples(tmp_path):
    _global(tmp_path, {"a": torch.zeros(2, 3)})
    clients = {
        0: _client(tmp_path, 0, {"a": torch.full((2, 3), 1.0)}, 10),
        1: _client(tmp_path, 1, {"a": torch.full((2, 3), 4.0)}, 30),
    }
    summary = _run(tmp_path, clients)
    new = read_weights(tmp_path / "round_001" / "global" / "adapter_model.safetensors")
    torch.testing.assert_close(new["a"], torch.full((2, 3), 0.25 * 1 + 0.75 * 4))
    assert summary["num_samples"] == 40 and summary["bytes_uploaded"] == 200
    assert summary["client_weights"] == {"0": 0.25, "1": 0.75}
    assert read_weights(tmp_path / "round_001" / "server_state.safetensors") == {}
    assert (tmp_path / "round_001" / "global" / "adapter_config.json").read_text() == '{"r": 2}\n'


def test_identical_updates_are_a_fixed_point_and_output_is_deterministic(tmp_path):
    weights = {"a": torch.randn(4, 4), "b": torch.randn(3)}
    _global(tmp_path, {k: torch.zeros_like(v) for k, v in weights.items()})
    clients = {k: _client(tmp_path, k, weights, 5 + k) for k in range(3)}
    _run(tmp_path, clients)
    out = tmp_path / "round_001" / "global" / "adapter_model.safetensors"
    first = out.read_bytes()
    for name, tensor in read_weights(out).items():
        torch.testing.assert_close(tensor, weights[name])
    _run(tmp_path, clients)
    assert out.read_bytes() == first


@pytest.mark.parametrize(
    ("bad_weights", "message"),
    [
        ({"a": torch.tensor([[float("nan"), 0, 0], [0, 0, 0]])}, r"client 1: tensor a has non-finite values"),
        ({"a": torch.tensor([[float("inf"), 0, 0], [0, 0, 0]])}, r"client 1: tensor a has non-finite values"),
        ({"a": torch.zeros(3, 2)}, r"client 1: tensor a is \(3, 2\)"),
        ({"b": torch.zeros(2, 3)}, r"client 1: update does not match the global adapter \(missing \['a'\]\)"),
    ],
)
def test_bad_updates_are_refused_naming_the_client(tmp_path, bad_weights, message):
    _global(tmp_path, {"a": torch.zeros(2, 3)})
    clients = {0: _client(tmp_path, 0, {"a": torch.ones(2, 3)}, 10), 1: _client(tmp_path, 1, bad_weights, 10)}
    with pytest.raises(UpdateRejected, match=message):
        _run(tmp_path, clients)
    assert not (tmp_path / "round_001" / "global").exists()


def test_pickle_uploads_are_refused_without_unpickling(tmp_path):
    _global(tmp_path, {"a": torch.zeros(2, 3)})
    clients = {0: _client(tmp_path, 0, {"a": torch.ones(2, 3)}, 10)}

    class Boom:
        def __reduce__(self):
            return (Path.touch, (tmp_path / "pwned",))

    (clients[0] / "adapter_model.safetensors").write_bytes(pickle.dumps(Boom()))
    with pytest.raises(UpdateRejected, match=r"client 0: .*not a readable safetensors file"):
        _run(tmp_path, clients)
    assert not (tmp_path / "pwned").exists()


def test_truncated_upload_is_refused(tmp_path):
    _global(tmp_path, {"a": torch.zeros(64, 64)})
    clients = {2: _client(tmp_path, 2, {"a": torch.ones(64, 64)}, 10)}
    path = clients[2] / "adapter_model.safetensors"
    path.write_bytes(path.read_bytes()[:-100])
    with pytest.raises(UpdateRejected, match=r"client 2:"):
        _run(tmp_path, clients)


def test_zero_samples_is_refused(tmp_path):
    _global(tmp_path, {"a": torch.zeros(2)})
    clients = {3: _client(tmp_path, 3, {"a": torch.ones(2)}, 0)}
    with pytest.raises(UpdateRejected, match=r"client 3: metrics.json reports num_samples=0"):
        _run(tmp_path, clients)


def test_registry_rejects_unknown_names_and_parameters():
    with pytest.raises(ValueError, match="unknown strategy 'nope'"):
        strategies.build({"name": "nope"})
    with pytest.raises(ValueError, match="unknown parameter"):
        strategies.build({"name": "fedavg", "lr": 1})


def test_fedavg_directly():
    updates = [ClientUpdate(client=k, weights={"w": torch.tensor([float(k)])}, num_samples=k + 1) for k in range(3)]
    result = strategies.build({"name": "fedavg"}).aggregate({"w": torch.zeros(1)}, updates, {}, 1)
    expected = (0 * 1 + 1 * 2 + 2 * 3) / 6
    torch.testing.assert_close(result.weights["w"], torch.tensor([expected]))
