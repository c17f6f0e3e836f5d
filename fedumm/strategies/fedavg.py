"""FedAvg (McMahan et al., 2017, Algorithm 1)."""

from __future__ import annotations

from dataclasses import dataclass

from fedumm.strategies.base import (
    AggregationResult,
    ClientUpdate,
    Weights,
    example_weights,
    register,
    weighted_average,
)


@register("fedavg")
@dataclass(frozen=True)
class FedAvg:
    """Example-weighted average of the client models: w ← Σ_k (n_k / n) w_k.

    Stateless: the server state it writes each round is empty.
    """

    def aggregate(
        self,
        global_weights: Weights,
        updates: list[ClientUpdate],
        server_state: Weights,
        round_index: int,
    ) -> AggregationResult:
        weights = example_weights(updates)
        averaged = {
            name: weighted_average([update.weights[name] for update in updates], weights)
            for name in global_weights
        }
        return AggregationResult(
            weights=averaged,
            server_state={},
            metrics={"client_weights": dict(zip((u.client for u in updates), weights))},
        )
