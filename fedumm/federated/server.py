"""The server side of a round (the ``aggregate`` rule).

The server reads only what clients upload, their adapter (safetensors, never pickle),
``metrics.json`` and the upload part of ``client_state.safetensors``, plus the previous global adapter and its own state. Every upload is
checked before any aggregation: a malformed, mis-shaped or non-finite update is refused
with the client named, and nothing of the round is written.
"""

from __future__ import annotations

import json
import math
import shutil
from pathlib import Path

import torch

from fedumm.artifacts import (
    ADAPTER_CONFIG,
    ADAPTER_WEIGHTS,
    CLIENT_STATE,
    METRICS,
    UPLOAD,
    Weights,
    client_state_part,
    read_metrics,
    read_weights,
    write_weights,
)
from fedumm.federated import strategies
from fedumm.federated.strategies.base import ClientUpdate
from fedumm.federated.strategies.lora import rescaled_lora_alpha
from fedumm.io import atomic_path, atomic_write_json
from fedumm.models.groups import parameter_group
from fedumm.reports.lineage import code_version


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


def load_update(client: int, client_dir: Path, reference: Weights) -> ClientUpdate:
    """Read and check one client's upload (adapter weights, metrics, client-state upload).

    A directory without a client state file uploaded nothing besides its adapter; the
    strategy checks the state it expects (e.g. SCAFFOLD's Δc_k).
    """
    try:
        weights = read_weights(client_dir / ADAPTER_WEIGHTS)
        metrics = read_metrics(client_dir / METRICS)
        state_file = client_dir / CLIENT_STATE
        state = client_state_part(read_weights(state_file), UPLOAD) if state_file.exists() else {}
    except (ValueError, OSError) as error:
        raise UpdateRejected(f"client {client}: {error}") from None
    check_update(client, weights, reference)
    num_samples = metrics.get("num_samples")
    if not isinstance(num_samples, int) or num_samples <= 0:
        raise UpdateRejected(f"client {client}: metrics.json reports num_samples={num_samples!r}")
    return ClientUpdate(client=client, weights=weights, num_samples=num_samples, metrics=metrics, state=state)


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


def aggregate_round(
    *,
    strategy_config: dict,
    round_index: int,
    previous_global: Path,
    previous_state: Path,
    client_dirs: dict[int, Path],
    out_dir: Path,
    state_out: Path,
    summary_out: Path,
) -> dict:
    """Aggregate the uploads of ``client_dirs`` into the global adapter of ``round_index``."""
    global_weights = read_weights(previous_global / ADAPTER_WEIGHTS)
    strategy = strategies.build(strategy_config)
    reference = strategy.update_reference(global_weights)
    updates = [load_update(k, path, reference) for k, path in sorted(client_dirs.items())]
    result = strategy.aggregate(global_weights, updates, read_weights(previous_state), round_index)
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
        "num_samples": sum(u.num_samples for u in updates),
        "bytes_uploaded": sum(u.metrics.get("bytes_uploaded", 0) for u in updates),
        "train_loss": _mean([u.metrics.get("train_loss") for u in updates]),
        "val_vqa_accuracy": _mean([u.metrics.get("val_vqa_accuracy") for u in updates]),
        "client_seconds": sum(u.metrics.get("seconds", 0.0) for u in updates),
        "groups": group_summary(global_weights, updates),
        "code_version": code_version(),
        **result.metrics,
    })
    atomic_write_json(summary_out, summary)
    return summary


def _json_safe(value):
    """JSON has no NaN/inf and only string keys; map them explicitly instead of failing late."""
    if isinstance(value, dict):
        return {str(k): _json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_json_safe(v) for v in value]
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value
