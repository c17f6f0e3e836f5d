"""FedUMM-Fusion: quality-aware weighted aggregation (FedUMM paper, Section 3.4, Eq. 1)."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import ClassVar

from fedumm.federated.strategies.base import (
    AggregationResult,
    ClientUpdate,
    Strategy,
    Weights,
    client_deltas,
)
from fedumm.federated.strategies.params import check_choice, check_real
from fedumm.federated.strategies.robust import check_robust, combine_deltas

MAPPINGS = ("linear", "power", "softmax")


def client_scores(updates: list[ClientUpdate], metric: str) -> list[float]:
    """Each client's validation score ``metrics[metric]``; a missing or non-numeric one is an error."""
    scores = []
    for update in updates:
        score = update.metrics.get(metric)
        if score is None:
            raise ValueError(
                f"client {update.client}: metrics have no {metric!r} (needed for fedumm_fusion quality weights; "
                f"does the client have a validation split?)"
            )
        if isinstance(score, bool) or not isinstance(score, (int, float)) or not math.isfinite(score):
            raise ValueError(f"client {update.client}: {metric} = {score!r} is not a finite number")
        scores.append(float(score))
    return scores


def quality_factors(
    scores: list[float], mapping: str, temperature: float, power: float, min_quality: float
) -> list[float]:
    """q_k = max(g(s_k), min_quality) with g given by ``mapping``:

    linear: g(s) = s;  power: g(s) = s^power;  softmax: g(s) = exp((s − max_j s_j) / temperature).

    The softmax is taken up to its normaliser, which cancels in the fusion weights; the shift
    by the best score keeps exp from overflowing and gives the best client q = 1.
    """
    if mapping == "softmax":
        best = max(scores)
        mapped = [math.exp((s - best) / temperature) for s in scores]
    else:
        negative = [s for s in scores if s < 0]
        if negative:
            raise ValueError(f"the {mapping} quality mapping needs scores >= 0, got {negative[0]!r}")
        mapped = scores if mapping == "linear" else [s**power for s in scores]
    return [max(q, min_quality) for q in mapped]


def fusion_weights(num_samples: list[int], qualities: list[float]) -> list[float]:
    """p_k = n_k q_k / Σ_j n_j q_j (FedUMM Eq. 1)."""
    products = [n * q for n, q in zip(num_samples, qualities)]
    total = math.fsum(products)
    if total <= 0:
        raise ValueError("every client has quality 0 under fedumm_fusion; raise min_quality above 0")
    return [product / total for product in products]


@dataclass(frozen=True)
class FedUMMFusion(Strategy):
    """FedUMM-Fusion (FedUMM paper, Section 3.4, Eq. 1): an importance-weighted average

        w ← w + Σ_k p_k (w_k − w),   p_k = n_k q_k / Σ_j n_j q_j  (= Σ_k p_k w_k),

    with n_k the client's training examples and q_k "a quality-aware weighting factor computed
    based on local validation performance". The paper gives no formula for q_k; here it is
    the client's validation score s_k = ``metrics[metric]`` (by default ``val_vqa_accuracy``,
    the VQA accuracy of the client's adapter after local training on its own validation
    split) through ``mapping`` (see ``quality_factors``):

        linear:  q_k = max(s_k, min_quality)
        power:   q_k = max(s_k^power, min_quality)
        softmax: q_k = max(exp((s_k − max_j s_j) / temperature), min_quality)

    ``min_quality`` (default 0.01) keeps a client with score 0 in the average; set it to 0 to
    drop such clients. A client without the metric is an error, not silently weighted.
    ``temperature`` applies to softmax only, ``power`` to power only. ``robust`` replaces the
    weighted mean of the deltas by a robust rule that receives the p_k as its weights.
    The paper's per-modality adapters and shared alignment token are not part of this rule:
    every adapter tensor is averaged with the same p_k. Stateless (empty server state).
    """

    name: ClassVar[str] = "fedumm_fusion"

    metric: str = "val_vqa_accuracy"
    mapping: str = "linear"
    temperature: float = 0.1
    power: float = 2.0
    min_quality: float = 0.01
    robust: dict | None = None

    def __post_init__(self) -> None:
        if not isinstance(self.metric, str) or not self.metric:
            raise ValueError(f"metric must be the name of a client metric, got {self.metric!r}")
        check_choice(self.name, "mapping", self.mapping, MAPPINGS)
        check_real(self.name, "temperature", self.temperature, above=0)
        check_real(self.name, "power", self.power, above=0)
        check_real(self.name, "min_quality", self.min_quality, at_least=0)
        check_robust(self.robust)

    def aggregate(
        self, global_weights: Weights, updates: list[ClientUpdate], server_state: Weights, round_index: int
    ) -> AggregationResult:
        if not updates:
            raise ValueError("fedumm_fusion: no client updates to aggregate")
        qualities = quality_factors(
            client_scores(updates, self.metric), self.mapping, self.temperature, self.power, self.min_quality
        )
        weights = fusion_weights([u.num_samples for u in updates], qualities)
        step = combine_deltas(client_deltas(global_weights, updates), weights, self.robust)
        return AggregationResult(
            weights={name: global_weights[name] + step[name] for name in sorted(global_weights)},
            server_state={},
            metrics={
                "client_weights": {str(u.client): p for u, p in zip(updates, weights)},
                "client_quality": {str(u.client): q for u, q in zip(updates, qualities)},
            },
        )
