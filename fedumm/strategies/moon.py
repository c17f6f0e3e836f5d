"""MOON (Li et al., 2021, "Model-Contrastive Federated Learning", CVPR)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from fedumm.strategies.base import AggregationResult, ClientUpdate, Weights, register
from fedumm.strategies.fedavg import FedAvg


@register("moon")
@dataclass(frozen=True)
class Moon:
    """MOON: FedAvg on the server; each client adds μ·ℓ_con to its loss (Eq. 4),

        ℓ_con = −log( e^{sim(z, z_glob)/τ} / (e^{sim(z, z_glob)/τ} + e^{sim(z, z_prev)/τ}) )   (Eq. 3)

    with sim the cosine similarity, z the representation under the adapter being trained,
    z_glob under the round's global adapter and z_prev under the client's own adapter from
    the last round it took part in (``fedumm.client_algorithms.MoonClient``, which also states
    the representation used). A client that never took part before has no z_prev and trains
    without the term that round (the paper's clients all take part from round 1 and keep
    their initial model as the first previous model; here the term would be a constant).
    """

    mu: float = 1.0
    temperature: float = 0.5

    client_needs_server_state: ClassVar[bool] = False
    client_needs_previous_round: ClassVar[bool] = True

    def __post_init__(self) -> None:
        if not self.mu >= 0:
            raise ValueError(f"mu must be >= 0, got {self.mu!r}")
        if not self.temperature > 0:
            raise ValueError(f"temperature must be > 0, got {self.temperature!r}")

    def client_algorithm(self, context):
        from fedumm.client_algorithms import ClientAlgorithm, MoonClient

        if context.previous_weights is None or self.mu == 0:
            return ClientAlgorithm()
        return MoonClient(context, self.mu, self.temperature)

    def aggregate(
        self,
        global_weights: Weights,
        updates: list[ClientUpdate],
        server_state: Weights,
        round_index: int,
    ) -> AggregationResult:
        return FedAvg().aggregate(global_weights, updates, server_state, round_index)
