"""MOON (Li et al., 2021, "Model-Contrastive Federated Learning", CVPR)."""

from __future__ import annotations

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
)
from fedumm.federated.strategies.fedavg import FedAvg
from fedumm.federated.strategies.params import check_real
from fedumm.federated.strategies.robust import check_robust
from fedumm.lazy import LazyModule

torch = LazyModule("torch")  # loaded by the jobs that use it, not by the DAG build (fedumm.lazy)
F = LazyModule("torch.nn.functional")


@dataclass(frozen=True)
class Moon(Strategy):
    """MOON: FedAvg on the server; each client adds μ·ℓ_con to its loss (Eq. 4),

        ℓ_con = −log( e^{sim(z, z_glob)/τ} / (e^{sim(z, z_glob)/τ} + e^{sim(z, z_prev)/τ}) )   (Eq. 3)

    with sim the cosine similarity, z the representation under the adapter being trained,
    z_glob under the round's global adapter and z_prev under the client's own adapter from
    the last round it took part in (``MoonClient`` below, which also states
    the representation used). A client that never took part before has no z_prev and trains
    without the term that round (the paper's clients all take part from round 1 and keep
    their initial model as the first previous model; here the term would be a constant).
    ``robust`` is FedAvg's: a robust rule in place of the server's weighted mean.
    """

    name: ClassVar[str] = "moon"
    modality_refusal: ClassVar[str] = "its contrastive term reads the understanding forward's hidden states, which text-to-image batches do not produce"

    mu: float = 1.0
    temperature: float = 0.5
    robust: dict | None = None

    client_needs_server_state: ClassVar[bool] = False
    client_needs_previous_round: ClassVar[bool] = True

    def __post_init__(self) -> None:
        check_real(self.name, "mu", self.mu, at_least=0)
        check_real(self.name, "temperature", self.temperature, above=0)
        check_robust(self.robust)

    def client_algorithm(self, context: ClientContext) -> ClientAlgorithm:
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
        return FedAvg(robust=self.robust).aggregate(global_weights, updates, server_state, round_index)


# ----------------------------------------------------------------------------- client half


def moon_contrastive_loss(
    z: torch.Tensor, z_global: torch.Tensor, z_previous: torch.Tensor, temperature: float
) -> torch.Tensor:
    """ℓ_con = −log(e^{sim(z, z_glob)/τ} / (e^{sim(z, z_glob)/τ} + e^{sim(z, z_prev)/τ})), batch mean.

    MOON (Li et al. 2021, Eq. 3) with cosine similarity; written as softplus((s_prev − s_glob)/τ),
    which is the same value without overflow.
    """
    s_global = F.cosine_similarity(z, z_global, dim=-1)
    s_previous = F.cosine_similarity(z, z_previous, dim=-1)
    return F.softplus((s_previous - s_global) / temperature).mean()


def mean_hidden_state(hidden: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
    """Mean of the last hidden states [B, L, D] over attended positions: the visual tokens
    prepended by the model (always attended) and the text tokens where ``attention_mask`` is 1."""
    visual = hidden.shape[1] - attention_mask.shape[1]
    mask = torch.cat([attention_mask.new_ones(attention_mask.shape[0], visual), attention_mask], dim=1)
    mask = mask.to(hidden.dtype).unsqueeze(-1)
    return (hidden * mask).sum(dim=1) / mask.sum(dim=1)


class MoonClient(ClientAlgorithm):
    """Adds μ·ℓ_con to the task loss (MOON, Li et al. 2021, Eq. 4).

    The representation z of a sample is ``mean_hidden_state`` of the language model's last
    hidden states (the input of its LM head, captured by a forward pre-hook) — MOON's
    projection-head output has no counterpart in a causal LM. z_glob and z_prev come from the
    same batch under the round's start adapter and this client's adapter of its last round,
    without gradients and in eval mode: before the training forward, the adapter tensors are
    overwritten in place with each reference adapter and then restored bit for bit.
    """

    def __init__(self, context: ClientContext, mu: float, temperature: float) -> None:
        if context.previous_weights is None:
            raise ValueError("MOON needs the client's adapter of a previous round")
        self.references = (context.global_weights, context.previous_weights)
        self.mu = mu
        self.temperature = temperature

    def prepare(self, model: torch.nn.Module) -> None:
        head = model.get_base_model().get_output_embeddings()
        self.handle = head.register_forward_pre_hook(self._capture)

    def _capture(self, module: torch.nn.Module, args: tuple) -> None:
        self.hidden = args[0]

    def before_forward(self, model: torch.nn.Module, batch: dict[str, torch.Tensor]) -> None:
        from fedumm.models import adapters  # client jobs only (see strategies.base)
        from fedumm.models.training import train_mode

        with torch.no_grad():
            trained = {name: tensor.detach().clone() for name, tensor in adapters.adapter_state(model).items()}
            model.eval()
            self.targets = []
            for reference in self.references:
                adapters.set_adapter_state(model, reference)
                model(**batch)
                self.targets.append(mean_hidden_state(self.hidden, batch["attention_mask"]))
            adapters.set_adapter_state(model, trained)
            train_mode(model)

    def extra_loss(self, model: torch.nn.Module, batch: dict[str, torch.Tensor], outputs) -> torch.Tensor:
        z = mean_hidden_state(self.hidden, batch["attention_mask"])
        return self.mu * moon_contrastive_loss(z, *self.targets, self.temperature)

    def finish(self, model: torch.nn.Module) -> ClientState:
        self.handle.remove()
        return ClientState()
