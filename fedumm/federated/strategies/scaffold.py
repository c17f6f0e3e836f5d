"""SCAFFOLD (Karimireddy et al., 2020, "SCAFFOLD: Stochastic Controlled Averaging for Federated Learning")."""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from fedumm.artifacts import check_keys
from fedumm.federated.strategies.base import (
    AggregationResult,
    ClientAlgorithm,
    ClientContext,
    ClientState,
    ClientUpdate,
    Strategy,
    Weights,
    client_deltas,
    example_weights,
)
from fedumm.federated.strategies.params import check_real, is_int
from fedumm.federated.strategies.robust import combine_deltas
from fedumm.lazy import LazyModule

torch = LazyModule("torch")  # loaded by the jobs that use it, not by the DAG build (fedumm.lazy)


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


@dataclass(frozen=True)
class Scaffold(Strategy):
    """Server side of SCAFFOLD (Alg. 1, lines 16–17):

        x ← x + η_g · Σ_k p_k (y_k − x),      c ← c + (|S|/N) · (1/|S|) Σ_k Δc_k

    with p_k = n_k / Σ n (the paper's 1/|S|; example weights as in this workflow's FedAvg),
    η_g = ``server_lr``, N = ``num_clients`` (filled in from the experiment by
    ``fedumm.config.fill_derived_parameters``; unset means full participation, N = |S|). A
    client's Δc_k comes with its upload (``ClientUpdate.state``); tensors it did not train
    have Δc_k = 0 and are not sent. The server state is c, one tensor per adapter tensor
    (zero before round 1). The client part (``ScaffoldClient`` below) reads
    c and its own previous c_k.
    """

    name: ClassVar[str] = "scaffold"
    modality_refusal: ClassVar[str] = "its control variates correct every step's gradients, which per-modality steps (half of them frozen per batch) leave unchecked here"
    robust_refusal: ClassVar[str] = (
        "its control variates are averaged with the model deltas; a rule that drops or trims deltas but not the Δc_k of the same clients leaves c inconsistent, and byzantine Δc_k would still poison it"
    )

    server_lr: float = 1.0
    num_clients: int | None = None

    client_needs_server_state: ClassVar[bool] = True
    client_needs_previous_round: ClassVar[bool] = True

    def __post_init__(self) -> None:
        check_real(self.name, "server_lr", self.server_lr, above=0)
        if self.num_clients is not None and not (is_int(self.num_clients) and self.num_clients >= 1):
            raise ValueError(f"{self.name}: parameter num_clients must be a positive integer, got {self.num_clients!r}")

    def client_algorithm(self, context: ClientContext) -> ClientAlgorithm:
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


# ----------------------------------------------------------------------------- client half


def scaffold_control_update(
    global_weights: Weights,
    local_weights: Weights,
    c: Weights,
    c_k: Weights,
    trained: set[str],
    step_size_sum: float,
) -> tuple[Weights, Weights]:
    """SCAFFOLD option II (Karimireddy et al. 2020, Alg. 1 line 12): c_k⁺ = c_k − c + (x − y)/(K·η).

    ``step_size_sum`` is K·η (here Σ_t η_t over the local steps). Tensors not trained this
    round keep c_k⁺ = c_k: their x − y = 0 says nothing about their gradient. Returns (c_k⁺, Δc_k)
    with Δc_k = c_k⁺ − c_k restricted to the trained tensors (the others' Δ is zero and not sent).
    """
    new = {}
    for name in sorted(global_weights):
        if name in trained:
            drift = (global_weights[name].double() - local_weights[name].double()) / step_size_sum
            new[name] = (c_k[name].double() - c[name].double() + drift).to(c_k[name].dtype)
        else:
            new[name] = c_k[name]
    return new, {name: new[name] - c_k[name] for name in sorted(trained)}


def _zeros_like(weights: Weights) -> Weights:
    return {name: torch.zeros_like(tensor) for name, tensor in weights.items()}


def _checked(state: Weights, reference: Weights, what: str) -> Weights:
    check_keys(f"{what} vs. the adapter", state, set(reference))
    return state


class ScaffoldClient(ClientAlgorithm):
    """Local steps on g − c_k + c; afterwards c_k⁺ by option II (``scaffold_control_update``).

    c (server state) and c_k (this client's previous local state) start at zero. The correction
    is added to the gradient after backward, before clipping and the AdamW step (the paper's
    update is plain SGD, y ← y − η(g − c_k + c)); K·η is Σ_t η_t over the warmup/cosine schedule,
    i.e. K times the mean learning rate, so (x − y)/(K·η) is the step-size-weighted mean of the
    corrected gradients under SGD and the mean update direction per unit learning rate under AdamW.
    """

    def __init__(self, context: ClientContext) -> None:
        x = context.global_weights
        self.global_weights = x
        self.c = _checked(context.server_state, x, "SCAFFOLD server state c") if context.server_state else _zeros_like(x)
        previous = context.previous_state
        self.c_k = _checked(previous, x, "SCAFFOLD client state c_k") if previous else _zeros_like(x)
        self.step_size_sum = sum(context.learning_rates)
        if not self.step_size_sum > 0:
            raise ValueError("SCAFFOLD needs a positive learning rate in some local step (K·η > 0)")

    def prepare(self, model: torch.nn.Module) -> None:
        from fedumm.models import adapters  # client jobs only (see strategies.base)

        self.params = {name: p for name, p in adapters.adapter_parameters(model).items() if p.requires_grad}
        self.correction = {
            name: (self.c[name] - self.c_k[name]).to(device=p.device, dtype=p.dtype) for name, p in self.params.items()
        }

    def after_backward(self, model: torch.nn.Module) -> None:
        for name, param in self.params.items():
            if param.grad is not None:
                param.grad.add_(self.correction[name])

    def finish(self, model: torch.nn.Module) -> ClientState:
        from fedumm.models import adapters  # client jobs only (see strategies.base)

        y = {name: tensor.detach().cpu() for name, tensor in adapters.adapter_state(model).items()}
        c_plus, delta = scaffold_control_update(
            self.global_weights, y, self.c, self.c_k, set(self.params), self.step_size_sum
        )
        return ClientState(local=c_plus, upload=delta)
