"""SCAFFOLD (Karimireddy et al., 2020, "SCAFFOLD: Stochastic Controlled Averaging for Federated Learning")."""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import torch

from fedumm.strategies.base import (
    AggregationResult,
    ClientUpdate,
    Weights,
    client_deltas,
    combine_deltas,
    example_weights,
    register,
)


def check_control_deltas(update: ClientUpdate, global_weights: Weights) -> None:
    """Refuse a Δc_k with tensors the adapter lacks, of another shape, or not finite (client named)."""
    for name, tensor in update.state.items():
        if name not in global_weights:
            raise ValueError(f"client {update.client}: control-variate delta for unknown tensor {name}")
        if tensor.shape != global_weights[name].shape:
            raise ValueError(f"client {update.client}: control-variate delta {name} is {tuple(tensor.shape)}, "
                             f"expected {tuple(global_weights[name].shape)}")
        if not torch.isfinite(tensor).all():
            raise ValueError(f"client {update.client}: control-variate delta {name} has non-finite values")


@register("scaffold")
@dataclass(frozen=True)
class Scaffold:
    """Server side of SCAFFOLD (Alg. 1, lines 16–17):

        x ← x + η_g · Σ_k p_k (y_k − x),      c ← c + (|S|/N) · (1/|S|) Σ_k Δc_k

    with p_k = n_k / Σ n (the paper's 1/|S|; example weights as in this workflow's FedAvg),
    η_g = ``server_lr``, N = ``num_clients`` (filled in from the experiment by
    ``fedumm.config.fill_derived_parameters``; unset means full participation, N = |S|). A
    client's Δc_k comes with its upload (``ClientUpdate.state``); tensors it did not train
    have Δc_k = 0 and are not sent. The server state is c, one tensor per adapter tensor
    (zero before round 1). The client part (``fedumm.client_algorithms.ScaffoldClient``) reads
    c and its own previous c_k.
    """

    server_lr: float = 1.0
    num_clients: int | None = None

    client_needs_server_state: ClassVar[bool] = True
    client_needs_previous_round: ClassVar[bool] = True

    def __post_init__(self) -> None:
        if not self.server_lr > 0:
            raise ValueError(f"server_lr must be > 0, got {self.server_lr!r}")
        if self.num_clients is not None and (isinstance(self.num_clients, bool)
                                             or not isinstance(self.num_clients, int) or self.num_clients < 1):
            raise ValueError(f"num_clients must be a positive integer, got {self.num_clients!r}")

    def client_algorithm(self, context):
        from fedumm.client_algorithms import ScaffoldClient

        return ScaffoldClient(context)

    def aggregate(
        self,
        global_weights: Weights,
        updates: list[ClientUpdate],
        server_state: Weights,
        round_index: int,
    ) -> AggregationResult:
        total = self.num_clients or len(updates)
        if len(updates) > total:
            raise ValueError(f"{len(updates)} clients aggregated but num_clients={total}")
        for update in updates:
            check_control_deltas(update, global_weights)
        weights = example_weights(updates)
        step = combine_deltas(client_deltas(global_weights, updates), weights)
        new_weights = {name: global_weights[name] + self.server_lr * step[name] for name in global_weights}

        c = server_state or {name: torch.zeros_like(tensor) for name, tensor in global_weights.items()}
        new_c = {}
        for name in sorted(global_weights):
            increment = torch.zeros_like(c[name], dtype=torch.float64)
            for update in updates:
                if name in update.state:
                    increment += update.state[name].to(torch.float64)
            new_c[name] = (c[name].to(torch.float64) + increment / total).to(c[name].dtype)
        return AggregationResult(
            weights=new_weights,
            server_state=new_c,
            metrics={
                "client_weights": dict(zip((u.client for u in updates), weights)),
                "control_variate_norm": torch.sqrt(sum(t.double().pow(2).sum() for t in new_c.values())).item(),
            },
        )
