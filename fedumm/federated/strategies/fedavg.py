"""FedAvg (McMahan et al., 2017, Algorithm 1)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from fedumm.federated.strategies.base import (
    AggregationResult,
    ClientUpdate,
    Strategy,
    Weights,
    client_deltas,
    example_weights,
)
from fedumm.federated.strategies.robust import check_robust, combine_deltas


@dataclass(frozen=True)
class FedAvg(Strategy):
    """Example-weighted average of the client models: w ← w + Σ_k (n_k / n)(w_k − w) = Σ_k (n_k / n) w_k.

    Stateless: the server state it writes each round is empty. ``robust`` replaces the
    weighted mean of the client deltas by a robust rule (``fedumm.federated.strategies.robust.ROBUST_RULES``).
    """

    name: ClassVar[str] = "fedavg"

    robust: dict | None = None

    def __post_init__(self) -> None:
        check_robust(self.robust)

    def aggregate(
        self,
        global_weights: Weights,
        updates: list[ClientUpdate],
        server_state: Weights,
        round_index: int,
    ) -> AggregationResult:
        weights = example_weights(updates)
        step = combine_deltas(client_deltas(global_weights, updates), weights, self.robust)
        return AggregationResult(
            weights={name: global_weights[name] + step[name] for name in global_weights},
            server_state={},
            metrics={"client_weights": dict(zip((u.client for u in updates), weights))},
        )
