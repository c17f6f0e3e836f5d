"""FedUMM's per-modality adapters on the server (§3.4): each modality's parameter groups are aggregated
on their own, weighted by the clients' example counts of that modality.

A unified model's adapter holds an understanding part (LoRA on the language model and vision encoder,
the projector) and a generation part (the generation path's trained copies; ``fedumm.models.groups``).
"These adapters are trained locally and aggregated separately, allowing the framework to handle clients
with heterogeneous modality availability": the strategy runs once per modality, over that modality's
tensors, with the clients that hold records of it, each weighted by its count of them (from the
partition, never from the client). A client without text-to-image records therefore leaves the
generation adapter out of its update and out of the generation average instead of pulling it back
towards the previous round's. With one modality in the adapter this is the strategy's plain call.
"""

from __future__ import annotations

import dataclasses

from fedumm.artifacts import Weights
from fedumm.federated.strategies.base import AggregationResult, ClientUpdate, Strategy
from fedumm.models.groups import GROUP_MODALITY, MODALITIES, parameter_group


def tensor_modality(name: str) -> str:
    """The modality of an adapter tensor; one outside the known modules (a toy adapter) is understanding's."""
    try:
        return GROUP_MODALITY[parameter_group(name)]
    except ValueError:
        return "understanding"


def keys_by_modality(weights: Weights) -> dict[str, list[str]]:
    """The adapter's tensor names per modality present, in ``MODALITIES`` order."""
    found: dict[str, list[str]] = {}
    for name in weights:
        found.setdefault(tensor_modality(name), []).append(name)
    return {modality: found[modality] for modality in MODALITIES if modality in found}


def state_part(server_state: Weights, keys: set[str], adapter_keys: set[str]) -> Weights:
    """The entries of a server state that belong to ``keys``: those named ``<slot>/<key>`` (FedOpt's
    moments) with ``key`` in ``keys``, plus the entries tied to no adapter tensor (a step count)."""
    return {name: tensor for name, tensor in server_state.items()
            if _state_key(name) in keys or _state_key(name) not in adapter_keys}


def _state_key(name: str) -> str | None:
    """The adapter tensor a server-state entry ``<slot>/<key>`` belongs to (None for other names)."""
    return name.split("/", 1)[1] if "/" in name else None


def modality_update(update: ClientUpdate, keys: list[str], num_samples: int) -> ClientUpdate:
    """The part of a client's upload for one modality, weighted by its count of that modality."""
    return dataclasses.replace(
        update,
        weights={key: update.weights[key] for key in keys},
        state={key: value for key, value in update.state.items() if key in keys},
        num_samples=num_samples,
    )


def aggregate_by_modality(
    strategy: Strategy,
    global_weights: Weights,
    updates: list[ClientUpdate],
    server_state: Weights,
    round_index: int,
    sizes: dict[int, dict[str, int]],
) -> AggregationResult:
    """``strategy.aggregate`` per modality of the adapter; ``sizes``: each client's training examples
    per modality this round (``fedumm.partition.rounds.round_modality_sizes``).

    A modality no sampled client holds records of keeps its tensors and state unchanged. The
    result's metrics are the understanding call's (or the only modality's), plus ``modalities``:
    per modality, the clients aggregated and their weights' example counts.
    """
    parts = keys_by_modality(global_weights)
    adapter_keys = set(global_weights)
    weights: Weights = {}
    state: Weights = {}
    metrics: dict = {}
    by_modality: dict[str, dict] = {}
    for modality, keys in parts.items():
        members = [modality_update(u, keys, sizes[u.client][modality]) for u in updates if sizes[u.client][modality] > 0]
        own_state = state_part(server_state, set(keys), adapter_keys)
        by_modality[modality] = {"clients": [u.client for u in members],
                                 "num_samples": {str(u.client): u.num_samples for u in members}}
        if not members:
            weights.update({key: global_weights[key] for key in keys})
            state.update({name: tensor for name, tensor in own_state.items() if _state_key(name) in adapter_keys})
            continue
        result = strategy.aggregate({key: global_weights[key] for key in keys}, members, own_state, round_index)
        if result.lora_rank is not None and len(parts) > 1:
            raise ValueError(f"strategy {strategy.name!r} changes the LoRA rank, which per-modality aggregation does not support")
        weights.update(result.weights)
        state.update(result.server_state)
        metrics = metrics or result.metrics
        if len(parts) == 1:
            return dataclasses.replace(result, metrics={**result.metrics, "modalities": by_modality})
    # Entries tied to no tensor (a step count) come from the modalities aggregated, else stay as they were.
    state = {**{name: tensor for name, tensor in server_state.items() if _state_key(name) not in adapter_keys}, **state}
    return AggregationResult(weights={key: weights[key] for key in global_weights}, server_state=state,
                             metrics={**metrics, "modalities": by_modality})
