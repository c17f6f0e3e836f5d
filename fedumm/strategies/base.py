"""The aggregation interface every strategy implements, and its registry.

A strategy sees only what a server would: the previous global adapter, the clients'
uploaded adapters with their reported metrics, and its own state from the previous round.
It returns the next global adapter and its next state; the workflow stores both as
safetensors files per round, so a resumed run continues exactly where it stopped.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Callable, ClassVar, Protocol

import torch

Weights = dict[str, torch.Tensor]


@dataclass(frozen=True)
class ClientUpdate:
    """One client's upload for a round: its adapter after local training, its metrics, and what
    its client algorithm uploads besides (``state``, e.g. SCAFFOLD's Δc_k; empty for most)."""

    client: int
    weights: Weights
    num_samples: int
    metrics: dict = field(default_factory=dict)
    state: Weights = field(default_factory=dict)


@dataclass(frozen=True)
class AggregationResult:
    """The next global adapter, the next server state, metrics for aggregate.json, and the new
    LoRA rank when the strategy changes it (FLoRA's stacking; None: unchanged)."""

    weights: Weights
    server_state: Weights
    metrics: dict = field(default_factory=dict)
    lora_rank: int | None = None


class Strategy(Protocol):
    """Aggregation, plus optionally a client part (SCAFFOLD, MOON, FFA-LoRA).

    A strategy with a client part defines ``client_algorithm(context)`` returning a
    ``fedumm.client_algorithms.ClientAlgorithm`` and declares, as class attributes, which
    files its clients read (``client_needs``); strategies without one need neither.
    """

    client_needs_server_state: ClassVar[bool] = False
    client_needs_previous_round: ClassVar[bool] = False

    def aggregate(
        self,
        global_weights: Weights,
        updates: list[ClientUpdate],
        server_state: Weights,
        round_index: int,
    ) -> AggregationResult: ...


def update_reference(strategy: object, global_weights: Weights) -> Weights:
    """Tensors whose names, shapes and dtypes every upload must match: the global adapter's,
    unless the strategy's clients upload another shape (``update_reference``, e.g. FLoRA)."""
    expected = getattr(strategy, "update_reference", None)
    return global_weights if expected is None else expected(global_weights)


def client_needs(strategy: type | object) -> dict[str, bool]:
    """What the clients of a strategy (class or instance) read besides the round's start adapter.

    ``server_state``: the server state of round r − 1; ``previous_round``: the client's own
    client state and adapter from the last round it took part in. Both default to False.
    """
    return {
        "server_state": getattr(strategy, "client_needs_server_state", False),
        "previous_round": getattr(strategy, "client_needs_previous_round", False),
    }


REGISTRY: dict[str, type] = {}


def register(name: str) -> Callable[[type], type]:
    """Class decorator: make a dataclass strategy selectable as ``strategy.name: <name>``."""

    def add(cls: type) -> type:
        if name in REGISTRY:
            raise ValueError(f"strategy {name!r} registered twice")
        REGISTRY[name] = cls
        return cls

    return add


def build(config: dict) -> Strategy:
    """Instantiate the strategy named by ``config['name']`` with the remaining keys as parameters."""
    params = {key: value for key, value in config.items() if key != "name"}
    name = config.get("name")
    if name not in REGISTRY:
        raise ValueError(f"unknown strategy {name!r} (known: {', '.join(sorted(REGISTRY))})")
    cls = REGISTRY[name]
    allowed = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(params) - allowed)
    if unknown:
        raise ValueError(
            f"unknown parameter(s) {', '.join(unknown)} for strategy {name!r} "
            f"(allowed: {', '.join(sorted(allowed)) or 'none'})"
        )
    return cls(**params)


def example_weights(updates: list[ClientUpdate]) -> list[float]:
    """p_k = n_k / Σ_j n_j, the example weights of FedAvg (McMahan et al., 2017)."""
    total = sum(update.num_samples for update in updates)
    if total <= 0:
        raise ValueError("clients reported no training samples")
    return [update.num_samples / total for update in updates]


def weighted_average(tensors: list[torch.Tensor], weights: list[float]) -> torch.Tensor:
    """Σ_k w_k x_k, accumulated in float64 so rounding stays far below float32 resolution."""
    total = torch.zeros_like(tensors[0], dtype=torch.float64)
    for tensor, weight in zip(tensors, weights):
        total += weight * tensor.to(torch.float64)
    return total.to(tensors[0].dtype)


def client_deltas(global_weights: Weights, updates: list[ClientUpdate]) -> list[Weights]:
    """Δ_k = w_k − w: each client's change to the global adapter (its pseudo-gradient, negated)."""
    return [{name: update.weights[name] - global_weights[name] for name in global_weights} for update in updates]


RobustRule = Callable[..., Weights]
"""``rule(deltas, weights, **params) -> Weights``: a replacement for the weighted mean of deltas."""

ROBUST_RULES: dict[str, RobustRule] = {}


def combine_deltas(deltas: list[Weights], weights: list[float], robust: dict | None = None) -> Weights:
    """Σ_k p_k Δ_k, or the robust rule named by ``robust = {"name": ..., **params}``.

    Strategies aggregate through this one function, so every robust rule composes with
    every strategy that has a ``robust`` parameter.
    """
    if robust is None:
        return {name: weighted_average([delta[name] for delta in deltas], weights) for name in deltas[0]}
    check_robust(robust)
    params = {key: value for key, value in robust.items() if key != "name"}
    return ROBUST_RULES[robust["name"]](deltas, weights, **params)


def check_robust(robust: dict | None) -> None:
    """Fail at config time, not in round 7, on an unknown robust rule or a bad parameter."""
    if robust is not None:
        # Imported here: robust.py registers its rules into this module's ROBUST_RULES.
        from fedumm.strategies.robust import check_robust_params

        check_robust_params(robust)
