"""The server side of a round (the ``aggregate`` rule).

The server reads only what clients upload, their adapter (safetensors, never pickle),
``metrics.json`` and the upload part of ``client_state.safetensors``, plus the previous global
adapter, its own state and the partition's index files. Every upload is checked before any
aggregation, and a bad one is refused with the client named and nothing of the round written:
malformed, mis-shaped or non-finite tensors; an upload not bound to this experiment, round,
client and start adapter (replayed or misplaced); an implausible ``num_samples``; a copy of
another client's upload. The clients' update norms, their cosine to the mean update and what
a robust rule selected go into ``aggregate.json``, with norm outliers flagged (or refused).
"""

from __future__ import annotations

import json
import logging
import math
import shutil
from dataclasses import dataclass
from pathlib import Path

import torch

from fedumm.artifacts import (
    ADAPTER_CONFIG,
    ADAPTER_WEIGHTS,
    CLIENT_STATE,
    METRICS,
    UPLOAD,
    UPLOAD_BINDING,
    Weights,
    client_index_name,
    client_state_part,
    file_sha256,
    read_metrics,
    read_weights,
    write_weights,
)
from fedumm.federated import strategies
from fedumm.federated.modalities import aggregate_by_modality
from fedumm.federated.strategies.base import (
    ClientUpdate,
    client_deltas,
    example_weights,
    weighted_average,
)
from fedumm.federated.strategies.lora import rescaled_lora_alpha
from fedumm.federated.strategies.robust import global_norm, robust_selection
from fedumm.io import atomic_path, atomic_write_json
from fedumm.models.groups import parameter_group
from fedumm.partition.rounds import round_modality_sizes
from fedumm.reports.lineage import code_version

log = logging.getLogger(__name__)


class UpdateRejected(ValueError):
    """A client upload that the server refuses; the message names the client."""


def check_update(client: int, weights: Weights, reference: Weights) -> None:
    """Refuse an update whose tensors do not match the global adapter or are not finite."""
    missing = sorted(set(reference) - set(weights))
    extra = sorted(set(weights) - set(reference))
    if missing or extra:
        detail = f"missing {missing[:3]}" if missing else f"unexpected {extra[:3]}"
        raise UpdateRejected(f"client {client}: update does not match the global adapter ({detail})")
    for name, tensor in weights.items():
        if tensor.shape != reference[name].shape or tensor.dtype != reference[name].dtype:
            raise UpdateRejected(
                f"client {client}: tensor {name} is {tuple(tensor.shape)}/{tensor.dtype}, "
                f"expected {tuple(reference[name].shape)}/{reference[name].dtype}"
            )
        if not torch.isfinite(tensor).all():
            raise UpdateRejected(f"client {client}: tensor {name} has non-finite values")


@dataclass(frozen=True)
class ExpectedUpload:
    """What the server knows of an upload before reading it: the experiment, round and client it
    belongs to, the sha256 of the global adapter file the client had to start from, and the
    client's training examples that round, counted in its partition index (never the client's word)."""

    experiment: str
    round_index: int
    client: int
    start_sha256: str
    num_samples: int


def check_binding(metrics: dict, expected: ExpectedUpload, weights_sha256: str) -> None:
    """Refuse an upload not bound to this experiment, round, client and start adapter, or whose
    adapter file is not the one its metrics were written for: a replayed, stale or misplaced upload."""
    client = expected.client
    binding = metrics.get(UPLOAD_BINDING)
    if not isinstance(binding, dict):
        raise UpdateRejected(f"client {client}: metrics.json has no '{UPLOAD_BINDING}' record of its round")
    wanted = {"experiment": expected.experiment, "round": expected.round_index, "client": client,
              "start_sha256": expected.start_sha256, "weights_sha256": weights_sha256}
    for key, value in wanted.items():
        if binding.get(key) != value:
            raise UpdateRejected(
                f"client {client}: upload is bound to {key}={binding.get(key)!r}, expected {value!r} "
                "(replayed from another round, experiment or client, or started from another adapter)"
            )


def check_num_samples(client: int, reported: object, partition_size: int) -> None:
    """``num_samples`` must be an integer (not a bool) between 1 and the client's partition size."""
    if type(reported) is not int or not 1 <= reported <= partition_size:
        raise UpdateRejected(
            f"client {client}: metrics.json reports num_samples={reported!r}; its partition gives it "
            f"{partition_size} training examples this round"
        )


def load_update(client_dir: Path, reference: Weights, expected: ExpectedUpload) -> tuple[ClientUpdate, str]:
    """Read and check one client's upload (adapter weights, metrics, client-state upload); return it
    and the sha256 of its adapter file. The update is weighted by the partition's count.

    A directory without a client state file uploaded nothing besides its adapter; the
    strategy checks the state it expects (e.g. SCAFFOLD's Δc_k).
    """
    client = expected.client
    try:
        weights = read_weights(client_dir / ADAPTER_WEIGHTS)
        weights_sha256 = file_sha256(client_dir / ADAPTER_WEIGHTS)
        metrics = read_metrics(client_dir / METRICS)
        state_file = client_dir / CLIENT_STATE
        state = client_state_part(read_weights(state_file), UPLOAD) if state_file.exists() else {}
    except (ValueError, OSError) as error:
        raise UpdateRejected(f"client {client}: {error}") from None
    check_update(client, weights, reference)
    check_num_samples(client, metrics.get("num_samples"), expected.num_samples)
    check_binding(metrics, expected, weights_sha256)
    update = ClientUpdate(client=client, weights=weights, num_samples=expected.num_samples, metrics=metrics, state=state)
    return update, weights_sha256


def measurement_origin(reference: Weights) -> Weights:
    """What an update is measured from: the strategy's reference, with zeros where it only gives a
    shape (FLoRA's fresh client adapters, whose upload is itself the update)."""
    return {name: torch.zeros(t.shape, dtype=t.dtype) if t.is_meta else t for name, t in reference.items()}


def check_duplicates(updates: list[ClientUpdate], hashes: list[str], reference: Weights) -> None:
    """Refuse two clients uploading the same adapter file, unless both left it unchanged."""
    first_with: dict[str, int] = {}
    for update, digest in zip(updates, hashes):
        if digest in first_with and not all(torch.equal(update.weights[n], reference[n]) for n in reference):
            raise UpdateRejected(
                f"client {update.client}: upload is identical to client {first_with[digest]}'s"
            )
        first_with.setdefault(digest, update.client)


def update_statistics(updates: list[ClientUpdate], deltas: list[Weights]) -> dict[int, dict]:
    """Per client: its example weight p_k = n_k / Σ n, its update norm ‖Δ_k‖₂ (all tensors as one
    vector; ``deltas`` are the Δ_k = w_k − w) and the cosine between Δ_k and the weighted mean
    update Σ_j p_j Δ_j."""
    weights = example_weights(updates)
    norms = [global_norm(delta) for delta in deltas]
    mean = {name: weighted_average([delta[name] for delta in deltas], weights) for name in deltas[0]}
    mean_norm = global_norm(mean)
    statistics = {}
    for update, delta, norm, weight in zip(updates, deltas, norms, weights):
        dot = sum(float((delta[n].double() * mean[n].double()).sum()) for n in mean)
        cosine = dot / (norm * mean_norm) if norm > 0 and mean_norm > 0 else None
        statistics[update.client] = {"weight": weight, "update_norm": norm, "cosine_to_mean": cosine}
    return statistics


def norm_outliers(statistics: dict[int, dict], ratio: float) -> list[int]:
    """Clients whose update norm exceeds ``ratio`` times the round's median norm (upper median)."""
    norms = sorted(entry["update_norm"] for entry in statistics.values())
    median = norms[len(norms) // 2]
    return [k for k, entry in statistics.items() if median > 0 and entry["update_norm"] > ratio * median]


def with_lora_rank(adapter_config: dict, rank: int) -> dict:
    """The peft LoRA config of the same adapter at another rank, with the same scaling."""
    if adapter_config.get("rank_pattern") or adapter_config.get("alpha_pattern"):
        raise ValueError("changing the LoRA rank of an adapter with rank_pattern/alpha_pattern is not supported")
    alpha = rescaled_lora_alpha(adapter_config["lora_alpha"], adapter_config["r"], rank,
                                bool(adapter_config.get("use_rslora")))
    return {**adapter_config, "r": rank, "lora_alpha": alpha}


def group_summary(global_weights: Weights, updates: list[ClientUpdate]) -> dict[str, dict]:
    """Per parameter group (FedUMM §3.4): its tensors in the global adapter and the bytes the clients
    uploaded for it (``bytes_uploaded_by_group`` of their metrics)."""
    summary: dict[str, dict] = {}
    for name in global_weights:
        try:
            group = parameter_group(name)
        except ValueError:  # a tensor outside the known modules (e.g. a test's toy adapter)
            group = "other"
        summary.setdefault(group, {"tensors": 0, "bytes_uploaded": 0})["tensors"] += 1
    for update in updates:
        for group, size in (update.metrics.get("bytes_uploaded_by_group") or {}).items():
            summary.setdefault(group, {"tensors": 0, "bytes_uploaded": 0})["bytes_uploaded"] += size
    return summary


def _mean(values: list) -> float | None:
    present = [v for v in values if v is not None]
    return sum(present) / len(present) if present else None


def partition_modality_sizes(partition_dir: Path, clients: list[int], round_index: int) -> dict[int, dict[str, int]]:
    """Each client's training examples per modality in ``round_index``, from its partition index file."""
    return {
        k: round_modality_sizes(json.loads((partition_dir / client_index_name(k)).read_text()), round_index)
        for k in clients
    }


def aggregate_round(
    *,
    experiment: str,
    strategy_config: dict,
    upload_checks: dict,
    round_index: int,
    previous_global: Path,
    previous_state: Path,
    client_dirs: dict[int, Path],
    partition_dir: Path,
    out_dir: Path,
    state_out: Path,
    summary_out: Path,
    excluded: tuple[int, ...] = (),
) -> dict:
    """Aggregate the uploads of ``client_dirs`` into the global adapter of ``round_index``.

    ``upload_checks`` is the experiment's ``uploads`` block; ``excluded`` lists the clients the
    config dropped from this round (recorded in aggregate.json).
    """
    global_weights = read_weights(previous_global / ADAPTER_WEIGHTS)
    strategy = strategies.build(strategy_config)
    reference = strategy.update_reference(global_weights)
    start_sha256 = file_sha256(previous_global / ADAPTER_WEIGHTS)
    modality_sizes = partition_modality_sizes(partition_dir, sorted(client_dirs), round_index)
    sizes = {k: sum(counts.values()) for k, counts in modality_sizes.items()}
    loaded = [
        load_update(path, reference, ExpectedUpload(experiment, round_index, k, start_sha256, sizes[k]))
        for k, path in sorted(client_dirs.items())
    ]
    updates = [update for update, _ in loaded]
    origin = measurement_origin(reference)
    check_duplicates(updates, [digest for _, digest in loaded], origin)
    deltas = client_deltas(origin, updates)
    statistics = update_statistics(updates, deltas)
    outliers = norm_outliers(statistics, upload_checks["norm_outlier_ratio"])
    if outliers:
        message = (f"round {round_index}: update norm of client(s) {outliers} above "
                   f"{upload_checks['norm_outlier_ratio']}x the round's median")
        if upload_checks["refuse_norm_outliers"]:
            raise UpdateRejected(f"client {outliers[0]}: {message} (uploads.refuse_norm_outliers)")
        log.warning("%s", message)
    for k in outliers:
        statistics[k]["outlier"] = True

    result = aggregate_by_modality(strategy, global_weights, updates, read_weights(previous_state), round_index,
                                   modality_sizes)
    for name, tensor in result.weights.items():
        if not torch.isfinite(tensor).all():
            raise ValueError(f"round {round_index}: aggregation produced non-finite values in {name}")

    write_weights(out_dir / ADAPTER_WEIGHTS, result.weights)
    if result.lora_rank is None:
        with atomic_path(out_dir / ADAPTER_CONFIG) as tmp:
            shutil.copyfile(previous_global / ADAPTER_CONFIG, tmp)
    else:
        adapter_config = with_lora_rank(json.loads((previous_global / ADAPTER_CONFIG).read_text()), result.lora_rank)
        atomic_write_json(out_dir / ADAPTER_CONFIG, adapter_config)
    write_weights(state_out, result.server_state)
    summary = _json_safe({
        "round": round_index,
        "strategy": strategy_config["name"],
        "clients": [u.client for u in updates],
        "excluded": list(excluded),
        "num_samples": sum(u.num_samples for u in updates),
        "bytes_uploaded": sum(u.metrics.get("bytes_uploaded", 0) for u in updates),
        "train_loss": _mean([u.metrics.get("train_loss") for u in updates]),
        "val_vqa_accuracy": _mean([u.metrics.get("val_vqa_accuracy") for u in updates]),
        "client_seconds": sum(u.metrics.get("seconds", 0.0) for u in updates),
        "uploads": statistics,
        "outliers": outliers,
        "robust": robust_summary(strategy_config.get("robust"), updates, deltas),
        "groups": group_summary(global_weights, updates),
        "code_version": code_version(),
        **result.metrics,
    })
    atomic_write_json(summary_out, summary)
    return summary


def robust_summary(robust: dict | None, updates: list[ClientUpdate], deltas: list[Weights]) -> dict | None:
    """The robust rule's name and what it kept or dropped, by client id (``robust_selection``)."""
    if not robust:
        return None
    clients = [u.client for u in updates]
    selection = robust_selection(deltas, robust)
    by_client = {key: [clients[i] for i in value] if isinstance(value, list) else value
                 for key, value in selection.items()}
    return {"name": robust["name"], **by_client}


def _json_safe(value):
    """JSON has no NaN/inf and only string keys; map them explicitly instead of failing late."""
    if isinstance(value, dict):
        return {str(k): _json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_json_safe(v) for v in value]
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value
