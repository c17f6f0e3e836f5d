"""Fed-CMP (Xiong et al., 2026, "A Step Toward Federated Pretraining of Multimodal Large Language
Models", arXiv:2603.26786, Sec. 3.2, Eqs. 3-8, Appendix A).

Three parts, each behind its own switch so that the ablation of the paper's Table 3 can be run.
The equations below are reconstructed from the paper's prose, Appendix A and the works it cites
(the extracted text lost the formulas); ``docs/FEDCMP.md`` gives the derivations and the choices.

Notation per round: clients k = 1..K (sorted by id), client tensors W_k, previous global W,
example weights p_k = n_k / Σ_j n_j.

1. Fusion weights α_k (CRA, reliability-weighted fusion, Eq. 4). ``reliability=false``: α_k = p_k
   (the paper's "standard weighted averaging"). ``reliability=true``:

       α_k = m_k exp(−λ e_k) / Σ_j m_j exp(−λ e_j),   m_k = Σ_tensors ‖W_k − W‖²_F,

   with e_k the client's cross-modal alignment error (``metrics["alignment_error"]``, Eq. 5,
   computed in each client job by this module's client half, ``AlignmentErrorClient``,
   with ``fedumm.models.alignment``) and the squared update norm m_k as in MetaGPT (Zhou et al.,
   2024), which the paper cites for this term. ``magnitude=false`` drops m_k (the paper's
   RWF-Qua, Table 4); ``lam=0`` leaves m_k alone (RWF-Mag).

2. Canonical space (CRA, Eq. 3, after KnOTS, Stoica et al., 2024), for every 2-D tensor W_k
   (out × in, PyTorch layout) when ``canonical=true``:

       J = K^{-1/2} [W_1, …, W_K] = Ũ diag(σ̃) [V_1; …; V_K]^T       (thin SVD, float64)
       C_k = √K V_k   (so W_k = Ũ diag(σ̃) C_k^T exactly),   C̄ = Σ_k α_k C_k
       W_new = U diag(σ) C̄^T

   with U = Ũ and σ = σ̃ unless OPM is on. The client weights themselves are decomposed, not
   their deltas as in KnOTS: the paper's W_k is "the projector weight matrix from client k" and
   the reconstruction is the global projector. LoRA A and B are decomposed as separate matrices.
   The K^{-1/2} keeps σ̃ on the scale of one client's singular values whatever the number of
   sampled clients, so that σ can carry momentum across rounds. Without OPM this is exactly
   Σ_k α_k W_k (the canonical space alone changes nothing under a linear fusion; it matters
   through OPM). Other tensors (biases) are Σ_k α_k W_k.

3. OPM (Eqs. 6-8, Appendix A), per 2-D tensor when ``canonical=opm=true`` and a previous basis
   U_{t−1} (and σ_{t−1}) is in the server state, columns matched by index over the first
   c = min(q_{t−1}, q_t) columns (q, the number of columns, depends on K):

       s_j = sign⟨u_{t−1,j}, ũ_j⟩ (sign 0 = +1);  Ũ ← Ũ diag(s), C̄ ← C̄ diag(s)    (Align)
       d_t = mean_j (1 − cos(u_{t−1,j}, ũ_j))                                      (after Align)
       β_t = clip(β_min + γ d_t, β_min, β_max)                                     (Eq. 8)
       M = β_t U_{t−1} + (1 − β_t) Ũ;  M = P S Q^T;  U_t = P Q^T                   (Eqs. 6-7, polar)
       σ_t = β_t σ_{t−1} + (1 − β_t) σ̃                                             (momentum on σ)

   Columns beyond c take Ũ and σ̃ as they are. In the first round of a tensor U_t = Ũ, σ_t = σ̃.
   With ``canonical=false`` (Table 3's "OPM on the raw projector parameters") the same Eq. 6 is
   applied to the raw fused tensor instead of the basis: W_new = β_t W + (1 − β_t) W̄ with
   W̄ = Σ_k α_k W_k and d_t over the columns of W and W̄ (a 1-D tensor is one column; columns
   with a zero vector are left out of the mean, and d_t = 0 if none is left); no Align/polar,
   which have no meaning for raw parameters.

SVD signs are fixed deterministically (the largest-magnitude entry of every column of Ũ is
positive, its V column flipped with it). A tensor that no client changed (every upload equals
W bit for bit, e.g. a group frozen this round) is passed through and keeps its OPM state: the
paper never meets it, and OPM would otherwise rotate a tensor nobody trained.

With all three switches off Fed-CMP is FedAvg: W + Σ_k p_k (W_k − W), computed as FedAvg does.

State (``server_state``, float64, only with ``canonical=opm=true``): ``opm.basis.<name>``
(U_t, out × q) and ``opm.sigma.<name>`` (σ_t, q) for every 2-D tensor that has been fused.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import ClassVar

from fedumm.federated.strategies.base import (
    AggregationResult,
    ClientAlgorithm,
    ClientContext,
    ClientState,
    ClientUpdate,
    Strategy,
    Weights,
    example_weights,
    weighted_average,
)
from fedumm.federated.strategies.params import check_bool, check_real
from fedumm.lazy import LazyModule

torch = LazyModule("torch")  # loaded by the jobs that use it, not by the DAG build (fedumm.lazy)

BASIS = "opm.basis."
SIGMA = "opm.sigma."
ALIGNMENT_METRIC = "alignment_error"


# ----------------------------------------------------------------------------- reliability (Eq. 4)


def update_norms_sq(global_weights: Weights, updates: list[ClientUpdate]) -> list[float]:
    """m_k = Σ_tensors ‖W_k − W‖²_F over the whole adapter, in float64."""
    return [
        sum(
            float((update.weights[name].to(torch.float64) - global_weights[name].to(torch.float64)).square().sum())
            for name in sorted(global_weights)
        )
        for update in updates
    ]


def alignment_errors(updates: list[ClientUpdate]) -> list[float]:
    """e_k from each client's metrics; a missing or non-finite value names the client."""
    errors = []
    for update in updates:
        value = update.metrics.get(ALIGNMENT_METRIC)
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
            raise ValueError(
                f"fedcmp (reliability=true): client {update.client} reported "
                f"{ALIGNMENT_METRIC}={value!r} in its metrics; a finite number is required"
            )
        errors.append(float(value))
    return errors


def reliability_weights(norms_sq: list[float] | None, errors: list[float], lam: float) -> list[float] | None:
    """α_k = m_k exp(−λ e_k) / Σ_j m_j exp(−λ e_j) (m_k = 1 when ``norms_sq`` is None).

    Shifting every e_k by min_j e_j leaves α unchanged and keeps exp from underflowing. None when
    every m_k is 0: then every client equals the global adapter and any weights give the same result.
    """
    floor = min(errors)
    scores = [(1.0 if norms_sq is None else norms_sq[k]) * math.exp(-lam * (e - floor)) for k, e in enumerate(errors)]
    total = sum(scores)
    return None if total == 0 else [score / total for score in scores]


# ----------------------------------------------------------------------------- canonical space (Eq. 3)


def deterministic_signs(basis: torch.Tensor) -> torch.Tensor:
    """±1 per column making its largest-magnitude entry positive (first one on ties)."""
    rows = basis.abs().argmax(dim=0)
    picked = basis.gather(0, rows.unsqueeze(0)).squeeze(0)
    return torch.where(picked < 0, -1.0, 1.0).to(basis.dtype)


def canonical_decomposition(matrices: list[torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor, list[torch.Tensor]]:
    """(Ũ, σ̃, [C_k]) with K^{-1/2}[W_1, …, W_K] = Ũ diag(σ̃) [C_1; …; C_K]^T / √K, in float64.

    Ũ is out × q, σ̃ has q entries and each C_k is in × q, q = min(out, K·in), so that
    W_k = Ũ diag(σ̃) C_k^T.
    """
    count = len(matrices)
    scale = math.sqrt(count)
    joint = torch.cat([m.to(torch.float64) for m in matrices], dim=1) / scale
    basis, sigma, vh = torch.linalg.svd(joint, full_matrices=False)
    signs = deterministic_signs(basis)
    basis = basis * signs
    vh = vh * signs.unsqueeze(1)
    coefficients = [scale * block.T for block in vh.split(matrices[0].shape[1], dim=1)]
    return basis, sigma, coefficients


# ----------------------------------------------------------------------------- OPM (Eqs. 6-8, App. A)


def align_signs(basis: torch.Tensor, previous: torch.Tensor) -> torch.Tensor:
    """Align (App. A.1): ±1 per column of ``basis``, −1 where it points away from the same column of
    ``previous``; columns beyond ``previous`` keep +1."""
    common = min(basis.shape[1], previous.shape[1])
    signs = torch.ones(basis.shape[1], dtype=basis.dtype, device=basis.device)
    inner = (basis[:, :common] * previous[:, :common]).sum(dim=0)
    signs[:common] = torch.where(inner < 0, -1.0, 1.0).to(basis.dtype)
    return signs


def column_dissimilarity(previous: torch.Tensor, current: torch.Tensor) -> float:
    """d = mean over columns j of 1 − cos(previous_j, current_j), leaving out zero columns (0 if none is left)."""
    norms = previous.norm(dim=0) * current.norm(dim=0)
    valid = norms > 0
    if not bool(valid.any()):
        return 0.0
    cosine = ((previous * current).sum(dim=0)[valid] / norms[valid]).clamp(-1.0, 1.0)
    return float((1.0 - cosine).mean())


def momentum_coefficient(dissimilarity: float, beta_min: float, beta_max: float, gamma: float) -> float:
    """β_t = clip(β_min + γ d_t, β_min, β_max) (Eq. 8): more smoothing when the basis moves more."""
    return min(beta_max, max(beta_min, beta_min + gamma * dissimilarity))


def polar(matrix: torch.Tensor) -> torch.Tensor:
    """Orth (App. A.2): the closest matrix with orthonormal columns, P Q^T for M = P S Q^T."""
    left, _, right_h = torch.linalg.svd(matrix, full_matrices=False)
    return left @ right_h


def opm_step(
    previous_basis: torch.Tensor,
    previous_sigma: torch.Tensor,
    basis: torch.Tensor,
    sigma: torch.Tensor,
    beta_min: float,
    beta_max: float,
    gamma: float,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, float, float]:
    """(U_t, σ_t, s, β_t, d_t) from U_{t−1}, σ_{t−1} and this round's Ũ, σ̃ (Eqs. 6-8).

    ``s`` are the Align signs, to be applied to the fused coefficients as well.
    """
    common = min(basis.shape[1], previous_basis.shape[1])
    signs = align_signs(basis, previous_basis)
    aligned = basis * signs
    dissimilarity = column_dissimilarity(previous_basis[:, :common], aligned[:, :common])
    beta = momentum_coefficient(dissimilarity, beta_min, beta_max, gamma)
    mixed = aligned.clone()
    mixed[:, :common] = beta * previous_basis[:, :common] + (1.0 - beta) * aligned[:, :common]
    new_sigma = sigma.clone()
    new_sigma[:common] = beta * previous_sigma[:common] + (1.0 - beta) * sigma[:common]
    return polar(mixed), new_sigma, signs, beta, dissimilarity


def as_columns(tensor: torch.Tensor) -> torch.Tensor:
    """A tensor as a matrix of columns: 2-D as is, anything else as one column."""
    return tensor if tensor.ndim == 2 else tensor.reshape(-1, 1)


# ----------------------------------------------------------------------------- strategy


@dataclass(frozen=True)
class FedCMP(Strategy):
    """Fed-CMP: canonical space (CSC), reliability-weighted fusion (RWF) and orthogonality-preserved
    momentum (OPM); the equations are in the module docstring and ``docs/FEDCMP.md``.

    ``lam`` is λ of Eq. 4 (the paper's default 1.0); ``beta_min``, ``beta_max`` and ``gamma`` are
    β_min, β_max and γ of Eq. 8. The paper's values were lost in extraction; these defaults are
    ours and keep β < 1/2: columns are matched by index, and when two singular values swap order
    (Ũ = U_{t−1} P for a transposition P) the polar factor of βP + (1 − β)I is P itself for
    β > 1/2, so the swapped basis locks in instead of following the clients.
    """

    name: ClassVar[str] = "fedcmp"
    modality_refusal: ClassVar[str] = "its client half measures the cross-modal alignment on understanding batches, which text-to-image batches do not have"
    robust_refusal: ClassVar[str] = (
        "its server fuses the clients' updates in a canonical space weighted by their alignment reliability; a robust rule would replace that fusion, which is the method"
    )

    canonical: bool = True
    reliability: bool = True
    opm: bool = True
    lam: float = 1.0
    magnitude: bool = True
    beta_min: float = 0.1
    beta_max: float = 0.4
    gamma: float = 1.0

    def __post_init__(self) -> None:
        for name in ("canonical", "reliability", "opm", "magnitude"):
            check_bool(self.name, name, getattr(self, name))
        check_real(self.name, "lam", self.lam, at_least=0.0)
        check_real(self.name, "gamma", self.gamma, at_least=0.0)
        check_real(self.name, "beta_min", self.beta_min, at_least=0.0, below=1.0)
        check_real(self.name, "beta_max", self.beta_max, at_least=0.0, below=1.0)
        if self.beta_min > self.beta_max:
            raise ValueError(f"fedcmp: beta_min ({self.beta_min}) must not exceed beta_max ({self.beta_max})")
        if not self.magnitude and not self.reliability:
            raise ValueError("fedcmp: magnitude=false selects a reliability variant and needs reliability=true")

    def fusion_weights(self, global_weights: Weights, updates: list[ClientUpdate]) -> tuple[list[float], dict]:
        """α_k (Eq. 4, or p_k without reliability) and the reliability terms for the round's metrics."""
        example = example_weights(updates)
        if not self.reliability:
            return example, {}
        norms_sq = update_norms_sq(global_weights, updates)
        # e_k only enters through exp(−λ e_k): with λ = 0 (RWF-Mag) clients need not report it.
        errors = alignment_errors(updates) if self.lam > 0 else [0.0] * len(updates)
        weights = reliability_weights(norms_sq if self.magnitude else None, errors, self.lam)
        clients = [str(u.client) for u in updates]
        terms = {"update_norm_sq": dict(zip(clients, norms_sq))}
        if self.lam > 0:
            terms["alignment_error"] = dict(zip(clients, errors))
        return (example if weights is None else weights), terms

    def client_algorithm(self, context: ClientContext) -> ClientAlgorithm:
        return AlignmentErrorClient(context.train_batches)

    def aggregate(
        self,
        global_weights: Weights,
        updates: list[ClientUpdate],
        server_state: Weights,
        round_index: int,
    ) -> AggregationResult:
        updates = sorted(updates, key=lambda u: u.client)  # the SVD's last bits depend on the block order
        weights, terms = self.fusion_weights(global_weights, updates)
        new_weights: Weights = {}
        new_state: Weights = {}
        momentum: dict[str, dict[str, float]] = {}
        for name in sorted(global_weights):
            current = global_weights[name]
            tensors = [update.weights[name] for update in updates]
            if all(torch.equal(tensor, current) for tensor in tensors):
                new_weights[name] = current
                kept = (BASIS + name, SIGMA + name)
                new_state.update({key: server_state[key] for key in kept if key in server_state})
                continue
            if self.canonical and current.ndim == 2:
                fused, state, record = self._canonical(name, tensors, weights, server_state)
                new_state.update(state)
            else:
                fused, record = self._raw(current, tensors, weights)
            new_weights[name] = fused.to(current.dtype)
            if record is not None:
                momentum[name] = record
        metrics = {"client_weights": {str(u.client): w for u, w in zip(updates, weights)}, **terms}
        if self.opm:
            metrics["momentum"] = momentum
        return AggregationResult(weights=new_weights, server_state=new_state, metrics=metrics)

    def _canonical(
        self, name: str, tensors: list[torch.Tensor], weights: list[float], server_state: Weights
    ) -> tuple[torch.Tensor, Weights, dict | None]:
        basis, sigma, coefficients = canonical_decomposition(tensors)
        fused = torch.stack([weight * coefficient for weight, coefficient in zip(weights, coefficients)]).sum(dim=0)
        if not self.opm:
            return (basis * sigma) @ fused.T, {}, None
        record = None
        if BASIS + name in server_state:
            previous_basis, previous_sigma = server_state[BASIS + name], server_state[SIGMA + name]
            if previous_basis.shape[0] != basis.shape[0]:
                raise ValueError(
                    f"fedcmp: server_state basis of {name} has {previous_basis.shape[0]} rows, "
                    f"the tensor has {basis.shape[0]}; was the adapter changed mid-run?"
                )
            basis, sigma, signs, beta, dissimilarity = opm_step(
                previous_basis.to(torch.float64), previous_sigma.to(torch.float64), basis, sigma,
                self.beta_min, self.beta_max, self.gamma,
            )
            fused = fused * signs
            record = {"beta": beta, "dissimilarity": dissimilarity}
        state = {BASIS + name: basis.contiguous(), SIGMA + name: sigma.contiguous()}
        return (basis * sigma) @ fused.T, state, record

    def _raw(
        self, current: torch.Tensor, tensors: list[torch.Tensor], weights: list[float]
    ) -> tuple[torch.Tensor, dict | None]:
        # The same arithmetic as FedAvg, so that all switches off reproduces it.
        fused = current + weighted_average([tensor - current for tensor in tensors], weights)
        if not (self.opm and not self.canonical):
            return fused, None
        previous, mean = current.to(torch.float64), fused.to(torch.float64)
        dissimilarity = column_dissimilarity(as_columns(previous), as_columns(mean))
        beta = momentum_coefficient(dissimilarity, self.beta_min, self.beta_max, self.gamma)
        return beta * previous + (1.0 - beta) * mean, {"beta": beta, "dissimilarity": dissimilarity}


# ----------------------------------------------------------------------------- client half


class AlignmentErrorClient(ClientAlgorithm):
    """Plain local training, then e_k over the client's training data (Eq. 5), reported as
    ``metrics["alignment_error"]`` for the server's reliability weights."""

    def __init__(self, train_batches) -> None:
        self.train_batches = train_batches

    def finish(self, model: torch.nn.Module) -> ClientState:
        from fedumm.models.alignment import (
            mean_alignment_error,  # client jobs only (see strategies.base)
        )

        return ClientState(metrics={ALIGNMENT_METRIC: mean_alignment_error(model, self.train_batches())})
