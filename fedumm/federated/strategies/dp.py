"""Client-level differentially private FedAvg (McMahan et al., 2018, Algorithm 1: DP-FedAvg)."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from typing import ClassVar

from fedumm.federated.strategies.base import (
    AggregationResult,
    ClientUpdate,
    Strategy,
    Weights,
    client_deltas,
    weighted_average,
)
from fedumm.federated.strategies.params import check_real
from fedumm.federated.strategies.robust import clip_delta, global_norm
from fedumm.lazy import LazyModule

torch = LazyModule("torch")  # loaded by the jobs that use it, not by the DAG build (fedumm.lazy)

RDP_ORDERS: tuple[float, ...] = (
    tuple(1 + x / 10 for x in range(1, 100)) + tuple(range(12, 64)) + (80, 128, 256, 512, 1024)
)
"""Rényi orders α searched for the tightest ε: Opacus' default grid, extended upwards because
the optimum moves to large α when ε is small (large z, small q, few rounds)."""


def dp_epsilon(
    noise_multiplier: float,
    sampling_rate: float,
    delta: float,
    rounds: int,
    orders: tuple[float, ...] = RDP_ORDERS,
) -> float:
    """ε of ``rounds`` compositions of the Poisson-subsampled Gaussian mechanism at (ε, δ)-DP.

    RDP of the sampled Gaussian mechanism (Mironov, Talwar & Zhang, 2019) composed over
    rounds and converted to (ε, δ) with Balle et al. (2020, Thm. 21), by Opacus' RDP
    accountant. The result depends only on (z, q, δ, rounds), so no accountant state is kept.
    """
    # Opacus' package import pulls in its whole training stack (~2 s); only DP runs pay for it.
    from opacus.accountants.analysis.rdp import compute_rdp, get_privacy_spent

    rdp = compute_rdp(q=sampling_rate, noise_multiplier=noise_multiplier, steps=rounds, orders=list(orders))
    epsilon, _ = get_privacy_spent(orders=list(orders), rdp=rdp, delta=delta)
    return float(epsilon)


def round_generator(seed: int, round_index: int) -> torch.Generator:
    """A CPU generator seeded from (seed, round_index) alone, so a rerun draws the same noise.

    Hashing keeps distinct (seed, round) pairs on distinct streams, which seed + round would not.
    """
    digest = hashlib.sha256(f"dp_fedavg:{seed}:{round_index}".encode()).digest()
    return torch.Generator(device="cpu").manual_seed(int.from_bytes(digest[:8], "big"))


def gaussian_noise(like: Weights, std: float, generator: torch.Generator) -> Weights:
    """Independent N(0, std²) float64 noise per coordinate, drawn in sorted key order."""
    return {
        name: std * torch.randn(like[name].shape, generator=generator, dtype=torch.float64)
        for name in sorted(like)
    }


@dataclass(frozen=True)
class DPFedAvg(Strategy):
    """DP-FedAvg with the fixed-denominator estimator and flat clipping (McMahan et al., 2018, Alg. 1).

    w ← w + (1/m) Σ_k Δ_k · min(1, C / ‖Δ_k‖₂) + N(0, σ² I), σ = z·C/m, with C = ``clip_norm``,
    z = ``noise_multiplier`` and m the number of clients aggregated this round. This is
    Algorithm 1 with uniform client weights (w_k = 1), for which the paper's σ = z·S/(qW)
    becomes z·C/m: one client changes the clipped mean by at most C/m. Example counts are
    ignored on purpose: weighting by n_k would let one client's sensitivity grow with its data.

    Privacy accounting (reported as ``dp_epsilon`` for ``dp_delta`` after rounds 1..t) treats
    each round as the Poisson-subsampled Gaussian mechanism at rate q = ``sampling_rate``
    (clients per round / total clients). Deviation: the workflow samples a fixed number of
    clients per round, so the stated ε is the standard approximation used for fixed-size
    sampling, not a proof for it. Noise is drawn on the CPU from a generator seeded by
    (``seed``, round index): reruns are bit-identical, and every round's noise is fresh.
    """

    name: ClassVar[str] = "dp_fedavg"
    modality_refusal: ClassVar[str] = "the accountant's (ε, δ) covers one clipped, noised release per round, and per-modality aggregation would release twice"
    robust_refusal: ClassVar[str] = (
        "its privacy accounting assumes the clipped Gaussian mean; a data-dependent selection changes the sensitivity, so the reported ε would be wrong"
    )

    clip_norm: float
    noise_multiplier: float
    delta: float
    sampling_rate: float
    seed: int = 0

    def __post_init__(self) -> None:
        for name in ("clip_norm", "noise_multiplier"):
            check_real(self.name, name, getattr(self, name), above=0)
        check_real(self.name, "delta", self.delta, above=0, below=1)
        check_real(self.name, "sampling_rate", self.sampling_rate, above=0, at_most=1)
        if not isinstance(self.seed, int) or isinstance(self.seed, bool) or self.seed < 0:
            raise ValueError(f"dp_fedavg: parameter seed must be an integer >= 0, got {self.seed!r}")

    def aggregate(
        self,
        global_weights: Weights,
        updates: list[ClientUpdate],
        server_state: Weights,
        round_index: int,
    ) -> AggregationResult:
        if round_index < 1:
            raise ValueError(f"dp_fedavg: round_index must be >= 1, got {round_index}")
        m = len(updates)
        deltas = client_deltas(global_weights, updates)
        clipped = [clip_delta(delta, self.clip_norm) for delta in deltas]
        mean = {name: weighted_average([delta[name] for delta in clipped], [1 / m] * m) for name in global_weights}
        std = self.noise_multiplier * self.clip_norm / m
        noise = gaussian_noise(global_weights, std, round_generator(self.seed, round_index))
        return AggregationResult(
            weights={
                name: global_weights[name] + (mean[name].to(torch.float64) + noise[name]).to(global_weights[name].dtype)
                for name in global_weights
            },
            server_state={},
            metrics={
                "dp_epsilon": dp_epsilon(self.noise_multiplier, self.sampling_rate, self.delta, round_index),
                "dp_delta": self.delta,
                "dp_noise_std": std,
                "clipped_clients": [
                    update.client for update, delta in zip(updates, deltas) if global_norm(delta) > self.clip_norm
                ],
            },
        )

