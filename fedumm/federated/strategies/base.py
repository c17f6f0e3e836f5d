"""What every strategy is made of: a server half that aggregates and a client half that trains.

A strategy sees only what a server would: the previous global adapter, the clients'
uploaded adapters with their reported metrics, and its own state from the previous round.
It returns the next global adapter and its next state; the workflow stores both as
safetensors files per round, so a resumed run continues exactly where it stopped.

Its client half (``client_algorithm``) runs inside each client job: it chooses the model a
client trains, acts inside every local step (the hooks of ``fedumm.models.training.train``) and
returns what the client keeps and uploads besides its adapter. Both halves of a strategy live in
one module. A client half that needs peft or transformers imports them inside its methods:
aggregation jobs and the DAG import every strategy module and must not pay for those imports.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

from fedumm.artifacts import Weights
from fedumm.lazy import LazyModule

torch = LazyModule("torch")  # loaded by the jobs that use it, not by the DAG build (fedumm.lazy)


@dataclass(frozen=True)
class ClientUpdate:
    """One client's upload for a round: its adapter after local training, its metrics, and what
    its client algorithm uploads besides (``state``, e.g. SCAFFOLD's Δc_k; empty for most)."""

    client: int
    weights: Weights
    num_samples: int
    metrics: dict = field(default_factory=dict)
    state: Weights = field(default_factory=dict)


@dataclass(frozen=True)
class AggregationResult:
    """The next global adapter, the next server state, metrics for aggregate.json, and the new
    LoRA rank when the strategy changes it (FLoRA's stacking; None: unchanged)."""

    weights: Weights
    server_state: Weights
    metrics: dict = field(default_factory=dict)
    lora_rank: int | None = None


@dataclass(frozen=True)
class ClientContext:
    """What a client half may read. ``train_batches()`` yields the client's training examples once,
    in order, in batches as the training loop gets them. ``previous_*`` are None when the client
    never took part before (or the strategy did not ask for them)."""

    global_weights: Weights
    learning_rates: list[float]
    seed: int = 0
    server_state: Weights = field(default_factory=dict)
    previous_state: Weights | None = None
    previous_weights: Weights | None = None
    train_batches: Any = None


@dataclass(frozen=True)
class ClientState:
    """What a client half returns after training: ``local`` (kept by the client for its next
    round), ``upload`` (sent with the adapter, counted in ``bytes_uploaded``) and ``metrics``
    (added to the client's ``metrics.json``)."""

    local: Weights = field(default_factory=dict)
    upload: Weights = field(default_factory=dict)
    metrics: dict = field(default_factory=dict)


class ClientAlgorithm:
    """The client half of plain local training: the round's start adapter, no per-step work, no state.

    Strategies with a client part subclass it. The client job calls ``load_model`` (the model to
    train), ``prepare`` once before training, the hooks ``before_forward``, ``extra_loss`` and
    ``after_backward`` inside every local step (see ``fedumm.models.training.train``), and
    ``finish`` once after training.
    """

    def load_model(self, base: torch.nn.Module, start_adapter: Path) -> torch.nn.Module:
        from fedumm.models import (
            adapters,  # client jobs only (see the module docstring)
        )

        return adapters.load_adapter(base, start_adapter, is_trainable=True)

    def prepare(self, model: torch.nn.Module) -> None:
        return None

    def before_forward(self, model: torch.nn.Module, batch: dict[str, torch.Tensor]) -> None:
        return None

    def extra_loss(self, model: torch.nn.Module, batch: dict[str, torch.Tensor], outputs) -> torch.Tensor | None:
        return None

    def after_backward(self, model: torch.nn.Module) -> None:
        return None

    def finish(self, model: torch.nn.Module) -> ClientState:
        return ClientState()


class Strategy:
    """The interface of a strategy; concrete strategies are frozen dataclasses whose fields are the
    config's ``strategy:`` parameters, with ``name`` the value of ``strategy.name``.

    ``client_needs_server_state`` / ``client_needs_previous_round`` declare which files the client
    jobs read besides the round's start adapter: the server state of round r − 1, and the client's
    own client state and adapter from the last round it took part in.

    A strategy composes with the robust rules (``fedumm.federated.strategies.robust``) through a
    ``robust`` field; one without it states why in ``robust_refusal``, which the config's error repeats.
    A strategy that cannot run once per modality of a unified model (``fedumm.federated.modalities``)
    states why in ``modality_refusal``, one that needs LoRA factors and so cannot aggregate full
    fine-tuning's dense deltas (``fedumm.models.dense``) in ``full_refusal``.
    """

    name: ClassVar[str]
    client_needs_server_state: ClassVar[bool] = False
    client_needs_previous_round: ClassVar[bool] = False
    robust_refusal: ClassVar[str] = ""
    modality_refusal: ClassVar[str] = ""
    full_refusal: ClassVar[str] = ""

    def aggregate(
        self,
        global_weights: Weights,
        updates: list[ClientUpdate],
        server_state: Weights,
        round_index: int,
    ) -> AggregationResult:
        raise NotImplementedError

    def client_algorithm(self, context: ClientContext) -> ClientAlgorithm:
        """The client half for one client and round (plain local training unless overridden)."""
        return ClientAlgorithm()

    def update_reference(self, global_weights: Weights) -> Weights:
        """Tensors whose names, shapes and dtypes every upload must match: the global adapter's,
        unless the strategy's clients upload another shape (FLoRA)."""
        return global_weights


def example_weights(updates: list[ClientUpdate]) -> list[float]:
    """p_k = n_k / Σ_j n_j, the example weights of FedAvg (McMahan et al., 2017)."""
    total = sum(update.num_samples for update in updates)
    if total <= 0:
        raise ValueError("clients reported no training samples")
    return [update.num_samples / total for update in updates]


def weighted_average(tensors: list[torch.Tensor], weights: list[float]) -> torch.Tensor:
    """Σ_k w_k x_k, accumulated in float64 so rounding stays far below float32 resolution."""
    total = torch.zeros_like(tensors[0], dtype=torch.float64)
    for tensor, weight in zip(tensors, weights):
        total += weight * tensor.to(torch.float64)
    return total.to(tensors[0].dtype)


def client_deltas(global_weights: Weights, updates: list[ClientUpdate]) -> list[Weights]:
    """Δ_k = w_k − w: each client's change to the global adapter (its pseudo-gradient, negated)."""
    return [{name: update.weights[name] - global_weights[name] for name in global_weights} for update in updates]
