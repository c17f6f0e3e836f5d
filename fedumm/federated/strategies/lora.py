"""LoRA-aware aggregation: average what a LoRA adapter adds to a layer, the product B·A.

A LoRA layer adds (alpha/r)·B·A to its frozen weight (A: r×in, B: out×r). The scaling
alpha/r is the same for every client, so it factors out of every mean and error below,
which are all in units of B·A. Averaging the factors separately, as FedAvg does, gives
B̄Ā = (Σ_k p_k B_k)(Σ_k p_k A_k) ≠ Σ_k p_k B_k A_k (the cross terms p_j p_k B_j A_k do not
cancel); Σ_k p_k B_k A_k is what averaging the clients' merged models would give.
"""

from __future__ import annotations

import copy
import dataclasses
import math
from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar

from fedumm.federated.strategies.base import (
    AggregationResult,
    ClientAlgorithm,
    ClientContext,
    ClientUpdate,
    Strategy,
    Weights,
    client_deltas,
    example_weights,
)
from fedumm.federated.strategies.robust import combine_deltas
from fedumm.lazy import LazyModule

torch = LazyModule("torch")  # loaded by the jobs that use it, not by the DAG build (fedumm.lazy)

LORA_A = "lora_A.weight"
LORA_B = "lora_B.weight"

MODES = ("fedit", "exact", "stack", "ffa")


@dataclass(frozen=True)
class ProductStats:
    """Frobenius norms of one module's mean product M = Σ_k p_k B_k A_k and of two errors against it.

    ``truncation_error`` = ‖M − M_r‖_F = ‖S_{r+1:}‖ for M_r the best rank-r approximation (what
    ``exact`` loses); ``fedit_error`` = ‖B̄Ā − M‖_F (what averaging the factors loses).
    """

    norm: float
    truncation_error: float
    fedit_error: float

    def as_metrics(self) -> dict[str, float]:
        return {
            "norm": self.norm,
            "truncation_error": self.truncation_error,
            "truncation_error_relative": _relative(self.truncation_error, self.norm),
            "fedit_error": self.fedit_error,
            "fedit_error_relative": _relative(self.fedit_error, self.norm),
        }


def _relative(error: float, norm: float) -> float:
    # M = 0 (e.g. every client left B at peft's zero initialisation): nothing to lose.
    return error / norm if norm > 0 else 0.0


def rescaled_lora_alpha(alpha: float, rank: int, new_rank: int, use_rslora: bool = False) -> float:
    """The lora_alpha that keeps peft's scaling of a LoRA layer when its rank changes:
    α/r (α/√r with rsLoRA) stays the same, so a stacked or fresh adapter adds B·A at the same scale."""
    return alpha * (math.sqrt(new_rank / rank) if use_rslora else new_rank / rank)


def lora_pairs(names) -> dict[str, tuple[str, str]]:
    """Module prefix → (A name, B name) for every ``<prefix>lora_A.weight`` / ``<prefix>lora_B.weight`` pair."""
    names = set(names)
    prefixes = {name[: -len(suffix)] for name in names for suffix in (LORA_A, LORA_B) if name.endswith(suffix)}
    pairs = {}
    for prefix in sorted(prefixes):
        a_name, b_name = prefix + LORA_A, prefix + LORA_B
        if a_name not in names or b_name not in names:
            raise ValueError(f"LoRA module {prefix.rstrip('.')!r} has only one of its factors lora_A, lora_B")
        pairs[prefix] = (a_name, b_name)
    return pairs


def _stack(Bs: list[torch.Tensor], As: list[torch.Tensor], weights: list[float]) -> tuple[torch.Tensor, torch.Tensor]:
    """B_cat = [p_1 B_1 … p_K B_K] (out × Kr) and A_catᵀ = [A_1ᵀ … A_Kᵀ] (in × Kr): M = B_cat A_cat."""
    for B, A in zip(Bs, As):
        if B.dim() != 2 or A.dim() != 2 or B.shape[1] != A.shape[0] or B.shape != Bs[0].shape or A.shape != As[0].shape:
            raise ValueError(f"LoRA factors of shapes {tuple(B.shape)} and {tuple(A.shape)} are not out×r and r×in "
                             f"pairs of one rank and shape")
    B_cat = torch.cat([p * B.to(torch.float64) for B, p in zip(Bs, weights)], dim=1)
    A_cat_t = torch.cat([A.to(torch.float64).T for A in As], dim=1)
    return B_cat, A_cat_t


def _fedit_error(R_B: torch.Tensor, R_A: torch.Tensor, core: torch.Tensor, weights: list[float], rank: int) -> float:
    """‖B̄Ā − M‖_F through the QR cores, with no out×in matrix.

    With B_cat = Q_B R_B and A_catᵀ = Q_A R_A: B̄ = Σ_k p_k B_k = Q_B Σ_k R_B[:, k], Ā = Σ_k p_k A_k
    = (Σ_k p_k R_A[:, k])ᵀ Q_Aᵀ (k: the k-th block of r columns) and M = Q_B R_B R_Aᵀ Q_Aᵀ, so
    B̄Ā − M = Q_B (b̄ āᵀ − R_B R_Aᵀ) Q_Aᵀ, and Q_B, Q_A have orthonormal columns.
    """
    b_bar = sum(R_B[:, k * rank:(k + 1) * rank] for k in range(len(weights)))
    a_bar = sum(p * R_A[:, k * rank:(k + 1) * rank] for k, p in enumerate(weights))
    return torch.linalg.matrix_norm(b_bar @ a_bar.T - core).item()


def _stats(S: torch.Tensor, rank: int, fedit_error: float) -> ProductStats:
    return ProductStats(
        norm=torch.linalg.vector_norm(S).item(),
        truncation_error=torch.linalg.vector_norm(S[rank:]).item(),
        fedit_error=fedit_error,
    )


def product_stats(Bs: list[torch.Tensor], As: list[torch.Tensor], weights: list[float]) -> ProductStats:
    """The errors of ``exact`` and ``fedit`` for one module, from the R factors and singular values only."""
    rank = Bs[0].shape[1]
    B_cat, A_cat_t = _stack(Bs, As, weights)
    R_B = torch.linalg.qr(B_cat, mode="r").R
    R_A = torch.linalg.qr(A_cat_t, mode="r").R
    core = R_B @ R_A.T
    return _stats(torch.linalg.svdvals(core), rank, _fedit_error(R_B, R_A, core, weights, rank))


def exact_product_mean(
    Bs: list[torch.Tensor], As: list[torch.Tensor], weights: list[float]
) -> tuple[torch.Tensor, torch.Tensor, ProductStats]:
    """The best rank-r factorisation B·A of M = Σ_k p_k B_k A_k (Eckart–Young), in float64.

    M = B_cat A_cat = Q_B (R_B R_Aᵀ) Q_Aᵀ with B_cat = Q_B R_B, A_catᵀ = Q_A R_A (reduced QR), so
    the SVD of the (at most) Kr×Kr core R_B R_Aᵀ = U S Vᵀ is an SVD of M: M = (Q_B U) S (Q_A V)ᵀ.
    Keeping the r largest singular values, split symmetrically: B = Q_B U_r S_r^{1/2},
    A = S_r^{1/2} V_rᵀ Q_Aᵀ.
    Cost O((out + in)(Kr)² + (Kr)³) against O(out·in·min(out, in)) for the SVD of M itself.

    The split matters to the next round's training, whose gradients are ∂L/∂B = G Aᵀ and
    ∂L/∂A = Bᵀ G: with S on B alone, A would have orthonormal rows and the step on A would scale
    with σ_j while the step on B would not. The symmetric split gives ‖B_{:,j}‖ = ‖A_{j,:}‖ =
    σ_j^{1/2}, a balanced pair (at the price of replacing peft's initial A after round 1). Signs are fixed
    so the largest-magnitude entry of each column of B is positive (the SVD leaves each
    ±(u_j, v_j) pair free), which makes reruns and other BLAS thread counts agree up to rounding.
    When min(out, in) < r, M has fewer than r singular values; the missing columns of B and rows
    of A are zero.
    """
    rank = Bs[0].shape[1]
    B_cat, A_cat_t = _stack(Bs, As, weights)
    Q_B, R_B = torch.linalg.qr(B_cat)
    Q_A, R_A = torch.linalg.qr(A_cat_t)
    core = R_B @ R_A.T
    U, S, Vh = torch.linalg.svd(core, full_matrices=False)
    kept = min(rank, S.numel())
    root = S[:kept].sqrt()
    B = torch.zeros(B_cat.shape[0], rank, dtype=torch.float64)
    A = torch.zeros(rank, A_cat_t.shape[0], dtype=torch.float64)
    B[:, :kept] = Q_B @ (U[:, :kept] * root)
    A[:kept] = (root[:, None] * Vh[:kept]) @ Q_A.T
    largest = B.abs().argmax(dim=0)
    signs = torch.where(B[largest, torch.arange(rank)] < 0, -1.0, 1.0).to(torch.float64)
    return B * signs, A * signs[:, None], _stats(S, rank, _fedit_error(R_B, R_A, core, weights, rank))


def stack_factors(
    B_global: torch.Tensor | None, A_global: torch.Tensor | None,
    Bs: list[torch.Tensor], As: list[torch.Tensor], weights: list[float],
) -> tuple[torch.Tensor, torch.Tensor]:
    """FLoRA's stacking (Wang et al. 2024, Eq. 5): B = [B_g, p_1 B_1, …, p_K B_K] and
    A = [A_g; A_1; …; A_K], so B·A = B_g A_g + Σ_k p_k B_k A_k with no approximation.

    The rank grows from R to R + K·r. ``B_global``/``A_global`` None: there is no global
    product yet (round 1), the stack starts empty.
    """
    B_cat, A_cat_t = _stack(Bs, As, weights)
    if B_global is not None:
        B_cat = torch.cat([B_global.to(torch.float64), B_cat], dim=1)
        A_cat_t = torch.cat([A_global.to(torch.float64).T, A_cat_t], dim=1)
    return B_cat, A_cat_t.T


def _check_frozen_a(global_weights: Weights, updates: list[ClientUpdate], pairs: dict[str, tuple[str, str]]) -> None:
    """FFA-LoRA: every client must return A exactly as the global adapter holds it."""
    for update in updates:
        for a_name, _ in pairs.values():
            if not torch.equal(update.weights[a_name], global_weights[a_name]):
                raise ValueError(f"client {update.client}: lora_fedavg mode ffa keeps LoRA A frozen, "
                                 f"but the update changed {a_name}")


def _total(stats: list[ProductStats]) -> ProductStats:
    """Errors of the whole adapter: the Frobenius norm over all modules, √Σ_m e_m²."""
    return ProductStats(*(math.sqrt(sum(getattr(s, field) ** 2 for s in stats))
                          for field in ("norm", "truncation_error", "fedit_error")))


@dataclass(frozen=True)
class LoraFedAvg(Strategy):
    """FedAvg that treats each LoRA pair (A, B) as the product B·A it applies.

    - ``mode: fedit`` — FedIT (Zhang et al., 2024, "Towards Building the FederatedGPT: Federated
      Instruction Tuning", ICASSP): A ← Σ_k p_k A_k and B ← Σ_k p_k B_k separately, i.e. plain
      FedAvg on the adapter (bit-identical to ``fedavg``).
    - ``mode: exact`` — the adapter whose product is the best rank-r approximation of the mean
      product, B·A ≈ Σ_k p_k B_k A_k (see ``exact_product_mean``), computed from the factors
      without forming an out×in matrix. The factors it returns are new (balanced, orthogonal
      columns of B), not a mean of the clients' factors, even where the product is exact
      (K = 1, or all clients share A or B).
    - ``mode: stack`` — FLoRA (Wang et al., 2024, "FLoRA: Federated Fine-Tuning Large Language
      Models with Heterogeneous Low-Rank Adaptations", NeurIPS): each client merges the global
      adapter into its base weights and trains a fresh rank-r LoRA on top
      (``FreshLoraOnGlobal`` below); the server stacks the clients' factors
      onto the global ones (``stack_factors``), so the global product is exactly the sum of
      every round's mean product and its rank grows by K·r per round (starting from 0: the
      round-0 adapter's B is zero, so its block is dropped). ``lora_alpha`` grows with the rank,
      keeping peft's scaling alpha/r. ``client_rank`` (r of the clients' fresh adapters) is
      filled in from the experiment's ``lora.r``; uploads are checked against it.
    - ``mode: ffa`` — FFA-LoRA (Sun et al., 2024, "Improving LoRA in Privacy-preserving Federated
      Learning", ICLR): clients keep A frozen at the shared seeded initialisation and train B
      only (``FrozenLoraA`` below); the server keeps the global A and
      averages B, B ← Σ_k p_k B_k, so the mean product Σ_k p_k B_k A is exact. An update whose
      A differs from the global A is refused, naming the client.

    Every other tensor (connector matrices, biases, peft's ``lora_embedding_*``/DoRA tensors,
    which are not ``lora_A/B.weight`` pairs) is averaged as in FedAvg: w ← w + Σ_k p_k (w_k − w).
    p_k = n_k / Σ n. Stateless. Metrics: per module (``lora_modules``) and for the whole
    adapter, ‖M‖_F of the round's mean product M = Σ_k p_k B_k A_k, the truncation error of
    ``exact`` ‖S_{r+1:}‖ (0 in ``stack`` mode, which keeps every singular value) and the error
    of ``fedit`` ‖B̄Ā − M‖_F, absolute and relative to ‖M‖_F, in every mode.

    No ``robust`` parameter: robust rules act on each coordinate of the deltas of A and B
    separately (a median of A's entries and one of B's), which makes no statement about the
    products B_k A_k this strategy averages; ``fedavg`` offers them on the factors.
    """

    name: ClassVar[str] = "lora_fedavg"
    modality_refusal: ClassVar[str] = "its LoRA-specific aggregation (stacking, SVD) does not apply to the generation path's full copies"
    full_refusal: ClassVar[str] = "its aggregation (stacking, SVD, a frozen A) needs LoRA factors, and full fine-tuning uploads dense deltas"
    robust_refusal: ClassVar[str] = (
        "it aggregates LoRA factors (stacked or as B·A products), not deltas of one shared vector space, so per-client distances and coordinate-wise statistics are undefined"
    )

    mode: str = "exact"
    client_rank: int | None = None

    def __post_init__(self) -> None:
        if self.mode not in MODES:
            raise ValueError(f"mode must be one of {', '.join(MODES)}, got {self.mode!r}")
        if self.mode == "stack" and not (isinstance(self.client_rank, int) and self.client_rank >= 1):
            raise ValueError(f"lora_fedavg mode stack needs client_rank >= 1 (the clients' LoRA r), "
                             f"got {self.client_rank!r}")

    def client_algorithm(self, context: ClientContext) -> ClientAlgorithm:
        if self.mode == "stack":
            return FreshLoraOnGlobal(rank=self.client_rank, seed=context.seed)
        return FrozenLoraA() if self.mode == "ffa" else ClientAlgorithm()

    def update_reference(self, global_weights: Weights) -> Weights:
        """Shapes the uploads must have: the global adapter's, with rank ``client_rank`` in stack mode."""
        if self.mode != "stack":
            return global_weights
        reference = dict(global_weights)
        for a_name, b_name in lora_pairs(global_weights).values():
            A, B = global_weights[a_name], global_weights[b_name]
            reference[a_name] = torch.empty(self.client_rank, A.shape[1], dtype=A.dtype, device="meta")
            reference[b_name] = torch.empty(B.shape[0], self.client_rank, dtype=B.dtype, device="meta")
        return reference

    def aggregate(
        self,
        global_weights: Weights,
        updates: list[ClientUpdate],
        server_state: Weights,
        round_index: int,
    ) -> AggregationResult:
        weights = example_weights(updates)
        pairs = lora_pairs(global_weights)
        if self.mode == "ffa":
            _check_frozen_a(global_weights, updates, pairs)
        factored = {
            "exact": {name for pair in pairs.values() for name in pair},
            "stack": {name for pair in pairs.values() for name in pair},
            "ffa": {a_name for a_name, _ in pairs.values()},
            "fedit": set(),
        }[self.mode]
        averaged = {name: tensor for name, tensor in global_weights.items() if name not in factored}
        step = combine_deltas(client_deltas(averaged, updates), weights)
        new = {name: averaged[name] + step[name] for name in averaged}
        # Round 1 of stack: the round-0 adapter adds nothing (B = 0), so its rank is not kept.
        empty_stack = self.mode == "stack" and all(
            torch.count_nonzero(global_weights[b_name]) == 0 for _, b_name in pairs.values()
        )
        rank = None

        per_module = {}
        for prefix, (a_name, b_name) in pairs.items():
            Bs = [update.weights[b_name] for update in updates]
            As = [update.weights[a_name] for update in updates]
            if self.mode == "exact":
                B, A, stats = exact_product_mean(Bs, As, weights)
            else:
                stats = product_stats(Bs, As, weights)
            if self.mode == "stack":
                B, A = stack_factors(
                    None if empty_stack else global_weights[b_name],
                    None if empty_stack else global_weights[a_name],
                    Bs, As, weights,
                )
                stats = dataclasses.replace(stats, truncation_error=0.0)
                rank = B.shape[1]
            if self.mode in ("exact", "stack"):
                new[b_name] = B.to(global_weights[b_name].dtype)
                new[a_name] = A.to(global_weights[a_name].dtype)
            if self.mode == "ffa":
                new[a_name] = global_weights[a_name]
            per_module[prefix.rstrip(".")] = stats

        return AggregationResult(
            weights={name: new[name] for name in global_weights},
            server_state={},
            metrics={
                "client_weights": dict(zip((u.client for u in updates), weights)),
                "lora_mode": self.mode,
                **({"lora_rank": rank} if rank is not None else {}),
                "lora": _total(list(per_module.values())).as_metrics(),
                "lora_modules": {name: stats.as_metrics() for name, stats in per_module.items()},
            },
            lora_rank=rank,
        )


# ----------------------------------------------------------------------------- client half


class FrozenLoraA(ClientAlgorithm):
    """FFA-LoRA (Sun et al. 2024): LoRA A stays at the shared seeded initialisation, only B
    (and the connector, when the round trains it) is trained."""

    def prepare(self, model: torch.nn.Module) -> None:
        for name, param in model.named_parameters():
            if ".lora_A." in name:
                param.requires_grad_(False)


class FreshLoraOnGlobal(ClientAlgorithm):
    """FLoRA (Wang et al. 2024, Alg. 1): the client merges the global adapter into its copy of the
    base weights, W ← W + (α/R)·B_g A_g (and takes the global connector), then trains a fresh
    rank-r LoRA on top, initialised as peft does (A random under this client's round seed,
    B = 0) with the scaling α/r of the global adapter. It uploads only that fresh adapter, which
    the server stacks (``fedumm.federated.strategies.lora.stack_factors``)."""

    def __init__(self, rank: int, seed: int) -> None:
        self.rank = rank
        self.seed = seed

    def load_model(self, base: torch.nn.Module, start_adapter: Path) -> torch.nn.Module:
        from fedumm.models import adapters  # client jobs only (see strategies.base)

        global_model = adapters.load_adapter(base, start_adapter, is_trainable=False)
        config = copy.deepcopy(global_model.peft_config[global_model.active_adapter])
        merged = global_model.merge_and_unload()
        config.lora_alpha = rescaled_lora_alpha(config.lora_alpha, config.r, self.rank, config.use_rslora)
        config.r = self.rank
        config.inference_mode = False
        return adapters.attach_adapter(merged, config, self.seed)
