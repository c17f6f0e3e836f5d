"""Client parts of strategies: what a client does around and inside its local training.

A strategy with a client part (``client_algorithm(context)``) gets, through ``ClientContext``,
the round's start adapter and what it declared it needs (``strategies.base.client_needs``):
the previous server state, and the client's own state and adapter from the last round it
took part in. Its ``ClientAlgorithm`` then

- ``load_model(base, start_adapter)``: the model to train, by default the base model with the
  round's start adapter (FLoRA instead merges it and trains a fresh adapter on top),
- ``prepare(model)``: once, before training (e.g. freeze tensors),
- the ``TrainingHook`` methods: inside every local step of ``fedumm.training.train``,
- ``finish(model)``: once, after training; returns the ``ClientState`` written to
  ``client_state.safetensors``: ``local`` (kept by the client for its next round) and
  ``upload`` (sent to the server with the adapter, counted in ``bytes_uploaded``).
"""

from __future__ import annotations

import copy
from dataclasses import dataclass, field
from pathlib import Path

import torch
import torch.nn.functional as F

from peft import PeftModel

from fedumm import model as vlm
from fedumm.strategies.base import Weights
from fedumm.strategies.lora import rescaled_lora_alpha
from fedumm.training import TrainingHook


@dataclass(frozen=True)
class ClientContext:
    """What a client algorithm may read; ``previous_*`` are None when the client never took part
    before (or the strategy did not ask for them)."""

    global_weights: Weights
    learning_rates: list[float]
    seed: int = 0
    server_state: Weights = field(default_factory=dict)
    previous_state: Weights | None = None
    previous_weights: Weights | None = None


@dataclass(frozen=True)
class ClientState:
    local: Weights = field(default_factory=dict)
    upload: Weights = field(default_factory=dict)


class ClientAlgorithm(TrainingHook):
    """Plain local training from the start adapter: no preparation, no per-step hook, no state."""

    def load_model(self, base: torch.nn.Module, start_adapter: Path) -> PeftModel:
        return vlm.load_adapter(base, start_adapter, is_trainable=True)

    def prepare(self, model: torch.nn.Module) -> None:
        return None

    def finish(self, model: torch.nn.Module) -> ClientState:
        return ClientState()


def for_strategy(strategy: object, context: ClientContext) -> ClientAlgorithm:
    """The client part of ``strategy``, or plain training for strategies without one."""
    make = getattr(strategy, "client_algorithm", None)
    return ClientAlgorithm() if make is None else make(context)


# ----------------------------------------------------------------------------- SCAFFOLD


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
    if set(state) != set(reference):
        raise ValueError(f"{what} does not match the adapter: missing {sorted(set(reference) - set(state))[:3]}, "
                         f"unexpected {sorted(set(state) - set(reference))[:3]}")
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
        self.params = {name: p for name, p in vlm.adapter_parameters(model).items() if p.requires_grad}
        self.correction = {
            name: (self.c[name] - self.c_k[name]).to(device=p.device, dtype=p.dtype) for name, p in self.params.items()
        }

    def after_backward(self, model: torch.nn.Module) -> None:
        for name, param in self.params.items():
            if param.grad is not None:
                param.grad.add_(self.correction[name])

    def finish(self, model: torch.nn.Module) -> ClientState:
        y = {name: tensor.detach().cpu() for name, tensor in vlm.adapter_state(model).items()}
        c_plus, delta = scaffold_control_update(
            self.global_weights, y, self.c, self.c_k, set(self.params), self.step_size_sum
        )
        return ClientState(local=c_plus, upload=delta)


# ----------------------------------------------------------------------------- MOON


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
        head = vlm.unwrap(model).language_model.get_output_embeddings()
        self.handle = head.register_forward_pre_hook(self._capture)

    def _capture(self, module: torch.nn.Module, args: tuple) -> None:
        self.hidden = args[0]

    @torch.no_grad()
    def before_forward(self, model: torch.nn.Module, batch: dict[str, torch.Tensor]) -> None:
        trained = {name: tensor.detach().clone() for name, tensor in vlm.adapter_state(model).items()}
        model.eval()
        self.targets = []
        for reference in self.references:
            vlm.set_adapter_state(model, reference)
            model(**batch)
            self.targets.append(mean_hidden_state(self.hidden, batch["attention_mask"]))
        vlm.set_adapter_state(model, trained)
        model.train()

    def extra_loss(self, model: torch.nn.Module, batch: dict[str, torch.Tensor], outputs) -> torch.Tensor:
        z = mean_hidden_state(self.hidden, batch["attention_mask"])
        return self.mu * moon_contrastive_loss(z, *self.targets, self.temperature)

    def finish(self, model: torch.nn.Module) -> ClientState:
        self.handle.remove()
        return ClientState()


# ----------------------------------------------------------------------------- FFA-LoRA


class FrozenLoraA(ClientAlgorithm):
    """FFA-LoRA (Sun et al. 2024): LoRA A stays at the shared seeded initialisation, only B
    (and the connector, when the round trains it) is trained."""

    def prepare(self, model: torch.nn.Module) -> None:
        for name, param in model.named_parameters():
            if ".lora_A." in name:
                param.requires_grad_(False)


# ----------------------------------------------------------------------------- FLoRA


class FreshLoraOnGlobal(ClientAlgorithm):
    """FLoRA (Wang et al. 2024, Alg. 1): the client merges the global adapter into its copy of the
    base weights, W ← W + (α/R)·B_g A_g (and takes the global connector), then trains a fresh
    rank-r LoRA on top, initialised as peft does (A random under this client's round seed,
    B = 0) with the scaling α/r of the global adapter. It uploads only that fresh adapter, which
    the server stacks (``fedumm.strategies.lora.stack_factors``)."""

    def __init__(self, rank: int, seed: int) -> None:
        self.rank = rank
        self.seed = seed

    def load_model(self, base: torch.nn.Module, start_adapter: Path) -> PeftModel:
        global_model = vlm.load_adapter(base, start_adapter, is_trainable=False)
        config = copy.deepcopy(global_model.peft_config[global_model.active_adapter])
        merged = global_model.merge_and_unload()
        config.lora_alpha = rescaled_lora_alpha(config.lora_alpha, config.r, self.rank, config.use_rslora)
        config.r = self.rank
        config.inference_mode = False
        return vlm.attach_adapter(merged, config, self.seed)
