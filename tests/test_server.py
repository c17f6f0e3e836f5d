"""Aggregation rounds on files: FedAvg, refusal of bad uploads, deterministic outputs."""

from __future__ import annotations

import json
import pickle
from pathlib import Path

import pytest
import torch

from fedumm.artifacts import UPLOAD_BINDING, check_keys, client_index_name, file_sha256, read_weights, write_weights
from fedumm.federated import strategies
from fedumm.federated.server import UpdateRejected, aggregate_round
from fedumm.federated.strategies.base import ClientUpdate


UPLOAD_CHECKS = {"norm_outlier_ratio": 10, "refuse_norm_outliers": False}


def _global(tmp_path: Path, weights: dict[str, torch.Tensor]) -> Path:
    directory = tmp_path / "round_000" / "global"
    write_weights(directory / "adapter_model.safetensors", weights)
    (directory / "adapter_config.json").write_text('{"r": 2}\n')
    write_weights(tmp_path / "round_000" / "server_state.safetensors", {})
    return directory


def _client(tmp_path: Path, k: int, weights: dict[str, torch.Tensor], num_samples: int, *,
            partition_size: int | None = None, round_index: int = 1, experiment: str = "exp") -> Path:
    """An upload as a client job writes it, bound to ``experiment``/``round_index``/``k`` and the
    round-0 global adapter, and the client's partition index with ``partition_size`` train ids."""
    directory = tmp_path / "round_001" / "clients" / str(k)
    write_weights(directory / "adapter_model.safetensors", weights)
    binding = {"experiment": experiment, "round": round_index, "client": k,
               "start_sha256": file_sha256(tmp_path / "round_000" / "global" / "adapter_model.safetensors"),
               "weights_sha256": file_sha256(directory / "adapter_model.safetensors")}
    (directory / "metrics.json").write_text(
        json.dumps({"num_samples": num_samples, "bytes_uploaded": 100, UPLOAD_BINDING: binding}))
    size = num_samples if partition_size is None else partition_size
    (tmp_path / "partition").mkdir(exist_ok=True)
    (tmp_path / "partition" / client_index_name(k)).write_text(
        json.dumps({"train": [f"s{k}_{i}" for i in range(size)], "val": []}))
    return directory


def _run(tmp_path: Path, clients: dict[int, Path], strategy=None, upload_checks=None) -> dict:
    return aggregate_round(
        experiment="exp",
        strategy_config=strategy or {"name": "fedavg"},
        upload_checks=upload_checks or UPLOAD_CHECKS,
        round_index=1,
        previous_global=tmp_path / "round_000" / "global",
        previous_state=tmp_path / "round_000" / "server_state.safetensors",
        client_dirs=clients,
        partition_dir=tmp_path / "partition",
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
    global_weights = {k: torch.zeros_like(v) for k, v in weights.items()}
    updates = [ClientUpdate(client=k, weights=weights, num_samples=5 + k) for k in range(3)]
    result = strategies.build({"name": "fedavg"}).aggregate(global_weights, updates, {}, 1)
    for name, tensor in result.weights.items():
        torch.testing.assert_close(tensor, weights[name])

    _global(tmp_path, global_weights)
    clients = {k: _client(tmp_path, k, {n: t + k for n, t in weights.items()}, 5 + k) for k in range(3)}
    _run(tmp_path, clients)
    out = tmp_path / "round_001" / "global" / "adapter_model.safetensors"
    first = out.read_bytes()
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


@pytest.mark.parametrize(
    ("reported", "partition_size", "shown"),
    [(0, 5, "0"), (True, 5, "True"), (10**12, 5, "1000000000000"), (6, 5, "6"), (2.0, 5, "2.0"), ("3", 5, "'3'")],
)
def test_implausible_num_samples_is_refused_naming_the_client(tmp_path, reported, partition_size, shown):
    _global(tmp_path, {"a": torch.zeros(2)})
    clients = {0: _client(tmp_path, 0, {"a": torch.ones(2)}, 5),
               3: _client(tmp_path, 3, {"a": torch.full((2,), 2.0)}, reported, partition_size=partition_size)}
    with pytest.raises(UpdateRejected, match=rf"client 3: metrics.json reports num_samples={shown}; "
                                             rf"its partition gives it {partition_size} training examples this round"):
        _run(tmp_path, clients)
    assert not (tmp_path / "round_001" / "global").exists()
    assert not (tmp_path / "round_001" / "aggregate.json").exists()


def test_the_weight_comes_from_the_partition_not_the_client(tmp_path):
    """A client reporting fewer examples than it has is weighted by its partition's count."""
    _global(tmp_path, {"a": torch.zeros(1)})
    clients = {0: _client(tmp_path, 0, {"a": torch.ones(1)}, 1, partition_size=30),
               1: _client(tmp_path, 1, {"a": torch.full((1,), 5.0)}, 10)}
    summary = _run(tmp_path, clients)
    assert summary["client_weights"] == {"0": 0.75, "1": 0.25}
    assert summary["num_samples"] == 40


def _rebind(directory: Path, **changes) -> None:
    metrics = json.loads((directory / "metrics.json").read_text())
    metrics[UPLOAD_BINDING].update(changes)
    (directory / "metrics.json").write_text(json.dumps(metrics))


@pytest.mark.parametrize(
    ("tamper", "message"),
    [
        (lambda d, tmp: _rebind(d, round=2), r"client 1: upload is bound to round=2, expected 1"),
        (lambda d, tmp: _rebind(d, experiment="other"), r"client 1: upload is bound to experiment='other', expected 'exp'"),
        (lambda d, tmp: _rebind(d, client=0), r"client 1: upload is bound to client=0, expected 1"),
        (lambda d, tmp: _rebind(d, start_sha256="0" * 64), r"client 1: upload is bound to start_sha256='0000"),
        # Another adapter file behind the same metrics (e.g. last round's adapter copied in).
        (lambda d, tmp: write_weights(d / "adapter_model.safetensors", {"a": torch.full((2, 3), 7.0)}),
         r"client 1: upload is bound to weights_sha256="),
        (lambda d, tmp: (d / "metrics.json").write_text("[1, 2]"), r"client 1: .*metrics.json: expected a JSON object, got list"),
        (lambda d, tmp: (d / "metrics.json").write_text('{"num_samples": 10}'), r"client 1: metrics.json has no 'binding' record"),
    ],
    ids=["replayed-round", "other-experiment", "other-client", "other-start", "swapped-adapter", "json-list", "unbound"],
)
def test_unbound_uploads_are_refused_naming_the_client(tmp_path, tamper, message):
    _global(tmp_path, {"a": torch.zeros(2, 3)})
    clients = {0: _client(tmp_path, 0, {"a": torch.ones(2, 3)}, 10), 1: _client(tmp_path, 1, {"a": torch.full((2, 3), 2.0)}, 10)}
    tamper(clients[1], tmp_path)
    with pytest.raises(UpdateRejected, match=message):
        _run(tmp_path, clients)
    assert not (tmp_path / "round_001" / "global").exists()
    assert not (tmp_path / "round_001" / "aggregate.json").exists()


def test_a_copy_of_another_clients_upload_is_refused_naming_both(tmp_path):
    _global(tmp_path, {"a": torch.zeros(2, 3)})
    clients = {k: _client(tmp_path, k, {"a": torch.full((2, 3), 1.0 + k)}, 10) for k in range(3)}
    (clients[2] / "adapter_model.safetensors").write_bytes((clients[0] / "adapter_model.safetensors").read_bytes())
    _rebind(clients[2], weights_sha256=file_sha256(clients[2] / "adapter_model.safetensors"))
    with pytest.raises(UpdateRejected, match=r"client 2: upload is identical to client 0's"):
        _run(tmp_path, clients)
    assert not (tmp_path / "round_001" / "global").exists()


def test_unchanged_uploads_are_not_duplicates(tmp_path):
    """Clients that trained nothing (all equal to the global adapter) are no copy of each other."""
    _global(tmp_path, {"a": torch.zeros(2)})
    clients = {k: _client(tmp_path, k, {"a": torch.zeros(2)}, 10) for k in range(2)}
    summary = _run(tmp_path, clients)
    assert summary["uploads"]["0"]["update_norm"] == 0.0 and summary["uploads"]["0"]["cosine_to_mean"] is None


def test_aggregate_json_records_norms_cosines_weights_and_flags_outliers(tmp_path):
    _global(tmp_path, {"a": torch.zeros(2)})
    deltas = {0: [3.0, 4.0], 1: [6.0, 8.0], 2: [-300.0, -400.0]}  # norms 5, 10, 500
    clients = {k: _client(tmp_path, k, {"a": torch.tensor(d)}, 10) for k, d in deltas.items()}
    summary = _run(tmp_path, clients)
    uploads = summary["uploads"]
    assert [uploads[str(k)]["update_norm"] for k in range(3)] == pytest.approx([5.0, 10.0, 500.0])
    assert [uploads[str(k)]["weight"] for k in range(3)] == pytest.approx([1 / 3] * 3)
    # The mean update is (3 + 6 − 300)/3, (4 + 8 − 400)/3: the direction of client 2.
    assert [uploads[str(k)]["cosine_to_mean"] for k in range(3)] == pytest.approx([-1.0, -1.0, 1.0])
    assert summary["outliers"] == [2] and uploads["2"]["outlier"] is True and "outlier" not in uploads["0"]
    assert json.loads((tmp_path / "round_001" / "aggregate.json").read_text())["outliers"] == [2]

    (tmp_path / "round_001" / "global" / "adapter_model.safetensors").unlink()
    with pytest.raises(UpdateRejected, match=r"client 2: round 1: update norm of client\(s\) \[2\] above 10x the round's median"):
        _run(tmp_path, clients, upload_checks={"norm_outlier_ratio": 10, "refuse_norm_outliers": True})
    assert not (tmp_path / "round_001" / "global" / "adapter_model.safetensors").exists()


@pytest.mark.parametrize(
    ("robust", "expected"),
    [
        ({"name": "krum", "f": 1}, {"name": "krum", "selected": [0]}),
        ({"name": "multi_krum", "f": 1}, {"name": "multi_krum", "selected": [0, 1, 4, 2]}),
        ({"name": "norm_clip", "max_norm": 2.0}, {"name": "norm_clip", "clipped": [3]}),
        ({"name": "trimmed_mean", "beta": 0.2}, {"name": "trimmed_mean", "trimmed_per_coordinate": 1}),
        ({"name": "median"}, {"name": "median"}),
    ],
)
def test_aggregate_json_records_the_robust_rules_selection_by_client(tmp_path, robust, expected):
    _global(tmp_path, {"a": torch.zeros(2)})
    deltas = {0: [1.0, 1.0], 1: [1.1, 0.9], 2: [0.9, 1.1], 3: [-50.0, -50.0], 4: [1.2, 1.0]}
    clients = {k: _client(tmp_path, k, {"a": torch.tensor(d)}, 10) for k, d in deltas.items()}
    summary = _run(tmp_path, clients, strategy={"name": "fedavg", "robust": robust})
    assert summary["robust"] == expected


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


def test_check_keys_names_up_to_three_missing_and_unexpected_tensors():
    state = {name: torch.zeros(1) for name in ("a", "b", "x", "y", "z", "w")}
    check_keys("adapter state", {"a": torch.zeros(1)}, {"a"})
    with pytest.raises(ValueError, match=r"^adapter state mismatch: missing \['c', 'd', 'e'\], unexpected \['w', 'x', 'y'\]$"):
        check_keys("adapter state", state, {"a", "b", "c", "d", "e", "f"})
