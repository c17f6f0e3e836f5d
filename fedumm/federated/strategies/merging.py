"""Model-merging baselines of Fed-CMP (Sec. 4.1: FedAvg-TA, -TIEs, -DARE): merge rules as the mean.

Each round merges the clients' deltas (task vectors) Δ_k = w_k − w tensor by tensor with one of
peft's merge utilities (``peft.utils.merge_utils``) and adds the result: w ← w + λ·τ. The
rules, with weights c_k (see ``Merge``), top_d(x) keeping the ⌊d·numel⌋ entries of largest
magnitude (d: ``density``) and m ~ Bernoulli(d) a random keep mask:

- ``task_arithmetic`` (Ilharco et al., 2023, "Editing models with task arithmetic"):
  τ = Σ_k c_k Δ_k.
- ``magnitude_prune``: τ = Σ_k c_k top_d(Δ_k).
- ``ties`` (Yadav et al., 2023, "TIES-Merging": trim, elect sign, disjoint merge):
  Δ̂_k = top_d(Δ_k); the elected sign γ = sgn(Σ_k Δ̂_k) (``majority_sign_method: total``) or
  sgn(Σ_k sgn Δ̂_k) (``frequency``), with ties going to +; then entry-wise
  τ = Σ_{k ∈ A} c_k Δ̂_k / max(1, |A|) over the clients A whose entry has the elected sign.
- ``dare_linear`` (Yu et al., 2024, "Language models are super mario", drop and rescale):
  Δ̃_k = m_k ⊙ Δ_k / d, then τ = Σ_k c_k Δ̃_k.
- ``dare_ties``: DARE's Δ̃_k in place of TIES' trimmed Δ̂_k, then TIES' sign election and
  disjoint merge.

peft implements every rule; this module chooses the weights, seeds DARE's masks, and turns a
merge into a round. Fed-CMP applies these baselines to the projector (full matrices); here they
act on every adapter tensor, LoRA factors included, each factor on its own (so, like FedIT,
they merge A and B rather than the products B·A).
"""

from __future__ import annotations

import hashlib
import importlib
import warnings
from dataclasses import dataclass
from typing import ClassVar

from fedumm.federated.strategies.base import (
    AggregationResult,
    ClientUpdate,
    Strategy,
    Weights,
    example_weights,
)
from fedumm.federated.strategies.params import is_real
from fedumm.lazy import LazyModule

torch = LazyModule("torch")  # loaded by the jobs that use it, not by the DAG build (fedumm.lazy)


@dataclass(frozen=True)
class MergeMethod:
    name: str  # the function of peft.utils.merge_utils
    prunes: bool  # takes ``density``
    elects_sign: bool  # takes ``majority_sign_method``; divides by the number of agreeing clients
    random: bool  # draws a keep mask from torch's global generator


METHODS = {
    "task_arithmetic": MergeMethod("task_arithmetic", prunes=False, elects_sign=False, random=False),
    "magnitude_prune": MergeMethod("magnitude_prune", prunes=True, elects_sign=False, random=False),
    "ties": MergeMethod("ties", prunes=True, elects_sign=True, random=False),
    "dare_linear": MergeMethod("dare_linear", prunes=True, elects_sign=False, random=True),
    "dare_ties": MergeMethod("dare_ties", prunes=True, elects_sign=True, random=True),
}
WEIGHTINGS = ("examples", "uniform")
SIGN_METHODS = ("total", "frequency")


def mask_seed(seed: int, round_index: int, name: str) -> int:
    """The seed of DARE's keep masks for one tensor in one round: a hash, stable across processes."""
    digest = hashlib.sha256(f"{seed}\0{round_index}\0{name}".encode()).digest()
    return int.from_bytes(digest[:8], "little") >> 1  # torch seeds are < 2**63


def merge_tensor(
    method: str,
    deltas: list[torch.Tensor],
    weights: torch.Tensor,
    density: float | None = None,
    majority_sign_method: str | None = None,
    seed: int | None = None,
) -> torch.Tensor:
    """τ for one tensor: peft's ``method`` on ``deltas`` with ``weights`` (one per delta).

    A random method draws its masks (peft: ``torch.bernoulli`` on the deltas' dtype and shape,
    one delta after the other) from torch's CPU generator seeded with ``seed``, inside
    ``fork_rng`` so the caller's random state is untouched.
    """
    spec = METHODS[method]
    # Imported on use: importing peft costs every aggregation job seconds (it loads transformers).
    merge = getattr(importlib.import_module("peft.utils.merge_utils"), spec.name)
    kwargs = {}
    if spec.prunes:
        kwargs["density"] = density
    if spec.elects_sign:
        kwargs["majority_sign_method"] = majority_sign_method or "total"
    with warnings.catch_warnings():
        # density 1 means "keep everything"; peft warns about it once per tensor and client.
        warnings.filterwarnings("ignore", message="The density .* no pruning will be performed")
        if not spec.random:
            return merge(deltas, weights, **kwargs)
        with torch.random.fork_rng(devices=[]):
            torch.default_generator.manual_seed(seed)
            return merge(deltas, weights, **kwargs)



@dataclass(frozen=True)
class Merge(Strategy):
    """w ← w + λ·τ(Δ_1, …, Δ_K) with τ one of peft's merge rules (module docstring), λ = ``scaling``.

    Weights: π_k = n_k / Σ n (``weighting: examples``) or 1/K (``uniform``). peft's linear rules
    (task_arithmetic, magnitude_prune, dare_linear) return Σ_k c_k x_k, so c_k = π_k; its
    sign-electing rules (ties, dare_ties) divide by the number of agreeing clients rather than
    by their weight, so c_k = K·π_k (all ones when uniform, as in TIES-Merging). Either way,
    K equal deltas with nothing pruned merge to that delta, and task_arithmetic with
    ``weighting: examples, scaling: 1`` is FedAvg.

    ``density`` (required by, and only allowed for, the pruning rules) is the kept fraction d
    in (0, 1]; ``majority_sign_method`` (ties, dare_ties; default ``total``) as in peft. ``seed``
    seeds DARE's masks per (seed, round, tensor name) (``mask_seed``): reruns are bit-identical
    and every round and tensor draws fresh masks. Deltas and merge are computed in float64 on
    the CPU and the result is cast back to each tensor's dtype. Stateless.
    """

    name: ClassVar[str] = "merge"
    modality_refusal: ClassVar[str] = "its merge methods act on LoRA task vectors, not on the generation path's full copies"
    robust_refusal: ClassVar[str] = (
        "TIES and DARE already trim, drop and elect signs over the client task vectors; use method: ties (its trim and sign election) for robustness instead"
    )

    method: str = "task_arithmetic"
    density: float | None = None
    majority_sign_method: str | None = None
    scaling: float = 1.0
    weighting: str = "examples"
    seed: int = 0

    def __post_init__(self) -> None:
        if self.method not in METHODS:
            raise ValueError(f"method must be one of {', '.join(METHODS)}, got {self.method!r}")
        spec = METHODS[self.method]
        if spec.prunes:
            if self.density is None:
                raise ValueError(f"density is required for method {self.method!r} (the kept fraction, in (0, 1])")
            if not is_real(self.density) or not 0 < self.density <= 1:
                raise ValueError(f"density must be a number in (0, 1], got {self.density!r}")
        elif self.density is not None:
            raise ValueError(f"density has no effect for method {self.method!r}; remove it")
        if self.majority_sign_method is not None:
            if not spec.elects_sign:
                raise ValueError(f"majority_sign_method has no effect for method {self.method!r}; remove it")
            if self.majority_sign_method not in SIGN_METHODS:
                raise ValueError(f"majority_sign_method must be one of {', '.join(SIGN_METHODS)}, "
                                 f"got {self.majority_sign_method!r}")
        if not is_real(self.scaling) or not 0 < self.scaling < float("inf"):
            raise ValueError(f"scaling must be a positive finite number, got {self.scaling!r}")
        if self.weighting not in WEIGHTINGS:
            raise ValueError(f"weighting must be one of {', '.join(WEIGHTINGS)}, got {self.weighting!r}")
        if isinstance(self.seed, bool) or not isinstance(self.seed, int) or self.seed < 0:
            raise ValueError(f"seed must be a non-negative integer, got {self.seed!r}")

    def merge_weights(self, updates: list[ClientUpdate]) -> list[float]:
        """c_k, the weights handed to peft (class docstring)."""
        count = len(updates)
        shares = example_weights(updates) if self.weighting == "examples" else [1.0 / count] * count
        factor = count if METHODS[self.method].elects_sign else 1
        return [factor * share for share in shares]

    def aggregate(
        self,
        global_weights: Weights,
        updates: list[ClientUpdate],
        server_state: Weights,
        round_index: int,
    ) -> AggregationResult:
        # peft draws DARE's masks client after client: fix the order so the masks do not
        # depend on the order the server listed the uploads in.
        updates = sorted(updates, key=lambda update: update.client)
        coefficients = self.merge_weights(updates)
        weights = torch.tensor(coefficients, dtype=torch.float64)
        new = {}
        for name, tensor in global_weights.items():
            base = tensor.to(device="cpu", dtype=torch.float64)
            deltas = [update.weights[name].to(device="cpu", dtype=torch.float64) - base for update in updates]
            merged = merge_tensor(self.method, deltas, weights, self.density, self.majority_sign_method,
                                  mask_seed(self.seed, round_index, name))
            new[name] = (base + self.scaling * merged).to(tensor.dtype)
        return AggregationResult(
            weights=new,
            server_state={},
            metrics={
                "client_weights": dict(zip((u.client for u in updates), example_weights(updates))),
                "merge_weights": dict(zip((u.client for u in updates), coefficients)),
            },
        )
