"""Server optimizers: FedAvgM (Hsu et al., 2019) and FedAdagrad, FedAdam, FedYogi (Reddi et al., 2021).

The equations and defaults follow Flower 1.42.0, ``flwr/serverapp/strategy/{fedopt,fedadam,
fedyogi,fedadagrad,fedavgm}.py`` (the Message-API strategies; the legacy
``flwr/server/strategy`` copies in the same release have the same equations but
``tau = 1e-9`` for FedAdam and FedAdagrad). Every strategy here starts from the
pseudo-gradient of the round,

    Δ_t = Σ_k p_k (w_k − w),   p_k = n_k / Σ_j n_j,

which is Flower's ``FedAvg aggregate − current weights`` written as a mean of client deltas
so that a robust rule (``robust = {"name": ..., **params}``, see
``fedumm.federated.strategies.robust.combine_deltas``) can replace the mean.

Deviations from Flower, all shared by the four strategies:

* Δ_t is accumulated as Σ_k p_k Δ_k in float64 (``combine_deltas``) rather than as
  Σ_k p_k w_k − w in the weights' dtype: equal in exact arithmetic, different in the last bits.
* Flower stores moments in the weights' dtype; here the moments and the update arithmetic use
  ``promote_types(dtype, float32)`` (identical for float32 adapters; keeps bf16/fp16 adapters
  from accumulating moments in half precision) and the new weights are cast back.
  Flower's FedAdam multiplies by a NumPy float64 ``eta_norm``, which under NumPy 2 promotes
  its output to float64; here the output keeps the adapter's dtype.
* Flower's ``eta_l`` (client learning rate) is not a parameter: Flower stores it but never
  uses it in aggregation, and the client learning rate here is ``train.lr`` of the config.
* Parameter values are validated (Flower accepts any float): ``eta > 0``, ``tau > 0`` (with
  ``tau = 0`` a coordinate that never moved divides 0 by 0), ``0 ≤ beta < 1``,
  ``server_learning_rate > 0`` and ``0 ≤ server_momentum < 1``.

State (``server_state``): ``t``, a 0-d int64 tensor counting the server steps taken, and the
moments per adapter tensor as ``m/<name>`` and ``v/<name>``. An empty state (round 1) means
t = 0 and the moments initialised as Flower does: zeros for m and v (not τ² as in Reddi et
al., Algorithm 2), and FedAvgM's momentum buffer set to the first pseudo-gradient.
"""

from __future__ import annotations

import math
from collections.abc import Callable
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
from fedumm.federated.strategies.params import check_real
from fedumm.federated.strategies.robust import check_robust, combine_deltas
from fedumm.lazy import LazyModule

torch = LazyModule("torch")  # loaded by the jobs that use it, not by the DAG build (fedumm.lazy)

STEP = "t"


def pseudo_gradient(
    global_weights: Weights, updates: list[ClientUpdate], robust: dict | None
) -> tuple[Weights, list[float]]:
    """Δ_t = Σ_k p_k (w_k − w) (or the robust rule's combination) and the example weights p_k."""
    weights = example_weights(updates)
    return combine_deltas(client_deltas(global_weights, updates), weights, robust), weights


def compute_dtype(tensor: torch.Tensor) -> torch.dtype:
    """The dtype of moments and update arithmetic: the tensor's own, but at least float32."""
    return torch.promote_types(tensor.dtype, torch.float32)


def read_state(
    server_state: Weights, global_weights: Weights, slots: tuple[str, ...]
) -> tuple[int, dict[str, Weights] | None]:
    """The step count and the moments ``{slot: {name: tensor}}`` of ``server_state``; None when empty.

    A non-empty state must hold exactly the step counter and one tensor per slot and adapter
    tensor, of the adapter tensor's shape: anything else means the strategy, its parameters
    or the adapter changed mid-run, which would silently corrupt the optimizer.
    """
    if not server_state:
        return 0, None
    expected = {STEP} | {f"{slot}/{name}" for slot in slots for name in global_weights}
    missing = sorted(expected - set(server_state))
    unexpected = sorted(set(server_state) - expected)
    if missing or unexpected:
        raise ValueError(
            f"server_state does not match this strategy and adapter (missing {missing[:3]}, "
            f"unexpected {unexpected[:3]}); were the strategy, its parameters or the adapter changed mid-run?"
        )
    for slot in slots:
        for name, tensor in global_weights.items():
            if server_state[f"{slot}/{name}"].shape != tensor.shape:
                raise ValueError(
                    f"server_state {slot}/{name} has shape {tuple(server_state[f'{slot}/{name}'].shape)}, "
                    f"the adapter tensor has {tuple(tensor.shape)}"
                )
    step = server_state[STEP]
    if step.numel() != 1 or int(step.item()) < 1:
        raise ValueError(f"server_state {STEP} must hold one positive step count, got {step.tolist()}")
    moments = {slot: {name: server_state[f"{slot}/{name}"] for name in global_weights} for slot in slots}
    return int(step.item()), moments


def step_tensor(step: int) -> torch.Tensor:
    return torch.tensor(step, dtype=torch.int64)


def round_metrics(updates: list[ClientUpdate], weights: list[float], step: int, server_lr: float) -> dict:
    return {
        "client_weights": {str(u.client): p for u, p in zip(updates, weights)},
        "server_step": step,
        "server_lr": server_lr,
    }


SecondMoment = Callable[["torch.Tensor", "torch.Tensor"], "torch.Tensor"]
"""``(v_{t-1}, Δ_t) -> v_t``, elementwise."""


def adaptive_aggregate(
    global_weights: Weights,
    updates: list[ClientUpdate],
    server_state: Weights,
    *,
    robust: dict | None,
    beta_1: float | None,
    second_moment: SecondMoment,
    step_size: Callable[[int], float],
    tau: float,
) -> AggregationResult:
    """The FedOpt update shared by FedAdagrad, FedAdam and FedYogi (Flower's ``FedOpt``):

        m_t = β1 m_{t−1} + (1 − β1) Δ_t,   v_t = second_moment(v_{t−1}, Δ_t),
        w ← w + η_t m_t / (√v_t + τ),

    with η_t = ``step_size(t)``. ``beta_1 = None`` means m_t = Δ_t and no m in the state
    (FedAdagrad, where Flower fixes β1 = 0).
    """
    delta, weights = pseudo_gradient(global_weights, updates, robust)
    slots = ("v",) if beta_1 is None else ("m", "v")
    step, moments = read_state(server_state, global_weights, slots)
    step += 1
    eta = step_size(step)
    new_weights: Weights = {}
    new_state: Weights = {STEP: step_tensor(step)}
    for name in sorted(global_weights):
        dtype = compute_dtype(global_weights[name])
        d = delta[name].to(dtype)
        if beta_1 is None:
            m = d
        else:
            m_prev = torch.zeros_like(d) if moments is None else moments["m"][name].to(dtype)
            m = beta_1 * m_prev + (1 - beta_1) * d
            new_state[f"m/{name}"] = m
        v_prev = torch.zeros_like(d) if moments is None else moments["v"][name].to(dtype)
        v = second_moment(v_prev, d)
        new_state[f"v/{name}"] = v
        # Flower's order of operations: (η_t · m) / (√v + τ).
        new = global_weights[name].to(dtype) + eta * m / (v.sqrt() + tau)
        new_weights[name] = new.to(global_weights[name].dtype)
    return AggregationResult(new_weights, new_state, round_metrics(updates, weights, step, eta))


def check_adaptive(owner: str, eta: float, tau: float, betas: dict[str, float], robust: dict | None) -> None:
    check_real(owner, "eta", eta, above=0)
    check_real(owner, "tau", tau, above=0)
    for name, beta in betas.items():
        check_real(owner, name, beta, at_least=0, below=1)
    check_robust(robust)


@dataclass(frozen=True)
class FedAdam(Strategy):
    """FedAdam (Reddi et al., 2021, Algorithm 2), as in Flower's ``serverapp/strategy/fedadam.py``:

        m_t = β1 m_{t−1} + (1 − β1) Δ_t
        v_t = β2 v_{t−1} + (1 − β2) Δ_t²
        η_t = η √(1 − β2^(t+1)) / (1 − β1^(t+1))
        w ← w + η_t m_t / (√v_t + τ)

    Flower bias-corrects the step size (Kingma & Ba's α_t) rather than the moments, and
    with the exponent ``server_round + 1``; t here is the server step count, which equals
    Flower's ``server_round`` because every round of this workflow aggregates. Note the +1:
    Kingma & Ba use β^t, so round 1 is corrected as Adam's step 2. m_0 = v_0 = 0.
    Defaults are Flower's: η = 0.1, β1 = 0.9, β2 = 0.99, τ = 1e-3. Module docstring: deviations.
    """

    name: ClassVar[str] = "fedadam"

    eta: float = 1e-1
    beta_1: float = 0.9
    beta_2: float = 0.99
    tau: float = 1e-3
    robust: dict | None = None

    def __post_init__(self) -> None:
        check_adaptive(self.name, self.eta, self.tau, {"beta_1": self.beta_1, "beta_2": self.beta_2}, self.robust)

    def aggregate(
        self, global_weights: Weights, updates: list[ClientUpdate], server_state: Weights, round_index: int
    ) -> AggregationResult:
        beta_2 = self.beta_2
        return adaptive_aggregate(
            global_weights,
            updates,
            server_state,
            robust=self.robust,
            beta_1=self.beta_1,
            second_moment=lambda v, d: beta_2 * v + (1 - beta_2) * d.square(),
            step_size=lambda t: self.eta * math.sqrt(1 - beta_2 ** (t + 1.0)) / (1 - self.beta_1 ** (t + 1.0)),
            tau=self.tau,
        )


@dataclass(frozen=True)
class FedYogi(Strategy):
    """FedYogi (Reddi et al., 2021, Algorithm 2), as in Flower's ``serverapp/strategy/fedyogi.py``:

        m_t = β1 m_{t−1} + (1 − β1) Δ_t
        v_t = v_{t−1} − (1 − β2) Δ_t² sign(v_{t−1} − Δ_t²)
        w ← w + η m_t / (√v_t + τ)

    No bias correction (as in Flower and the paper). m_0 = v_0 = 0. Defaults are Flower's:
    η = 0.01, β1 = 0.9, β2 = 0.99, τ = 1e-3. Module docstring: deviations.
    """

    name: ClassVar[str] = "fedyogi"

    eta: float = 1e-2
    beta_1: float = 0.9
    beta_2: float = 0.99
    tau: float = 1e-3
    robust: dict | None = None

    def __post_init__(self) -> None:
        check_adaptive(self.name, self.eta, self.tau, {"beta_1": self.beta_1, "beta_2": self.beta_2}, self.robust)

    def aggregate(
        self, global_weights: Weights, updates: list[ClientUpdate], server_state: Weights, round_index: int
    ) -> AggregationResult:
        beta_2 = self.beta_2
        return adaptive_aggregate(
            global_weights,
            updates,
            server_state,
            robust=self.robust,
            beta_1=self.beta_1,
            second_moment=lambda v, d: v - (1.0 - beta_2) * d.square() * torch.sign(v - d.square()),
            step_size=lambda t: self.eta,
            tau=self.tau,
        )


@dataclass(frozen=True)
class FedAdagrad(Strategy):
    """FedAdagrad (Reddi et al., 2021, Algorithm 2), as in Flower's ``serverapp/strategy/fedadagrad.py``:

        v_t = v_{t−1} + Δ_t²
        w ← w + η Δ_t / (√v_t + τ)

    Flower passes β1 = 0 to ``FedOpt``, so its m_t is Δ_t (the paper's Algorithm 2 keeps a
    β1 momentum); hence no ``beta_1`` parameter and only v in the state. v_0 = 0. Defaults
    are Flower's: η = 0.1, τ = 1e-3. Module docstring: deviations.
    """

    name: ClassVar[str] = "fedadagrad"

    eta: float = 1e-1
    tau: float = 1e-3
    robust: dict | None = None

    def __post_init__(self) -> None:
        check_adaptive(self.name, self.eta, self.tau, {}, self.robust)

    def aggregate(
        self, global_weights: Weights, updates: list[ClientUpdate], server_state: Weights, round_index: int
    ) -> AggregationResult:
        return adaptive_aggregate(
            global_weights,
            updates,
            server_state,
            robust=self.robust,
            beta_1=None,
            second_moment=lambda v, d: v + d.square(),
            step_size=lambda t: self.eta,
            tau=self.tau,
        )


@dataclass(frozen=True)
class FedAvgM(Strategy):
    """FedAvgM (Hsu et al., 2019), as in Flower's ``serverapp/strategy/fedavgm.py`` (PyTorch SGD convention):

        g_t = −Δ_t                           (the pseudo-gradient: old − new)
        b_t = g_t if t = 1 else μ b_{t−1} + g_t
        w ← w − η_s b_t                      (with b_t replaced by g_t when μ = 0)

    η_s = ``server_learning_rate`` (default 1.0), μ = ``server_momentum`` (default 0.0).
    With the defaults this is FedAvg. Flower has no Nesterov variant ("No nesterov for
    now"), so neither has this. The state holds the buffer as ``m/<name>`` only when μ > 0
    (Flower keeps none otherwise), plus the step count. Module docstring: deviations.
    """

    name: ClassVar[str] = "fedavgm"

    server_learning_rate: float = 1.0
    server_momentum: float = 0.0
    robust: dict | None = None

    def __post_init__(self) -> None:
        check_real(self.name, "server_learning_rate", self.server_learning_rate, above=0)
        check_real(self.name, "server_momentum", self.server_momentum, at_least=0, below=1)
        check_robust(self.robust)

    def aggregate(
        self, global_weights: Weights, updates: list[ClientUpdate], server_state: Weights, round_index: int
    ) -> AggregationResult:
        delta, weights = pseudo_gradient(global_weights, updates, self.robust)
        slots = ("m",) if self.server_momentum > 0 else ()
        step, buffers = read_state(server_state, global_weights, slots)
        step += 1
        new_weights: Weights = {}
        new_state: Weights = {STEP: step_tensor(step)}
        for name in sorted(global_weights):
            dtype = compute_dtype(global_weights[name])
            direction = -delta[name].to(dtype)
            if self.server_momentum > 0:
                if buffers is not None:
                    direction = self.server_momentum * buffers["m"][name].to(dtype) + direction
                new_state[f"m/{name}"] = direction
            new = global_weights[name].to(dtype) - self.server_learning_rate * direction
            new_weights[name] = new.to(global_weights[name].dtype)
        return AggregationResult(
            new_weights, new_state, round_metrics(updates, weights, step, self.server_learning_rate)
        )
