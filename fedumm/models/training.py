"""The training loop shared by base-model pretraining and every client's local training."""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Iterable, Protocol, Sequence

import torch
from tqdm import tqdm
from transformers import get_cosine_schedule_with_warmup

from fedumm.models.generation import generation_loss


@dataclass(frozen=True)
class OptimConfig:
    lr: float
    weight_decay: float = 0.0
    warmup_ratio: float = 0.0
    grad_clip: float | None = 1.0
    prox_mu: float = 0.0


class TrainingHook(Protocol):
    """A strategy's part of every local step (``fedumm.federated.strategies.base.ClientAlgorithm``).

    The loop calls, per step: ``before_forward`` (e.g. forwards under other adapter weights:
    parameters may still change in place here, before the step's graph holds them), then the
    training forward, ``extra_loss`` (a term added to the objective, or None), backward,
    ``after_backward`` (e.g. a gradient correction, before clipping and the optimizer step).
    """

    def before_forward(self, model: torch.nn.Module, batch: dict[str, torch.Tensor]) -> None: ...

    def extra_loss(self, model: torch.nn.Module, batch: dict[str, torch.Tensor], outputs) -> torch.Tensor | None: ...

    def after_backward(self, model: torch.nn.Module) -> None: ...


def configure_torch(seed: int, threads: int) -> torch.device:
    """Seed torch, fix the thread count and demand deterministic kernels.

    A resumed run must reproduce an uninterrupted one byte for byte, and CPU reductions
    depend on the thread count, so the count comes from the rule's ``threads``.
    """
    torch.manual_seed(seed)
    torch.set_num_threads(threads)
    torch.use_deterministic_algorithms(True, warn_only=False)
    os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def train_mode(model: torch.nn.Module) -> None:
    """``model.train()``, except for batch-norm layers whose parameters are frozen: they keep their
    running statistics, which no adapter saves (Emu3's VQ encoder), so that the model a client trains
    is the model that the next round loads."""
    model.train()
    for module in model.modules():
        if isinstance(module, torch.nn.modules.batchnorm._BatchNorm) and not any(
            param.requires_grad for param in module.parameters()
        ):
            module.eval()


def proximal_term(model: torch.nn.Module, anchor: dict[str, torch.Tensor]) -> torch.Tensor:
    """‖w − w_global‖² over the trainable parameters (FedProx, Li et al. 2020, Eq. 2)."""
    terms = [
        (param - anchor[name]).pow(2).sum()
        for name, param in model.named_parameters()
        if param.requires_grad
    ]
    return torch.stack(terms).sum()


def forward_loss(model: torch.nn.Module, batch: dict[str, torch.Tensor]):
    """(outputs, loss) of one batch: the model's own loss on the target tokens, or for a text-to-image
    batch (``image_codes``) the generation loss of ``fedumm.models.generation`` (outputs None)."""
    if "image_codes" in batch:
        return None, generation_loss(model, batch["prompt_ids"], batch["prompt_mask"], batch["image_codes"])
    outputs = model(**batch)
    return outputs, outputs.loss


def batch_modality(batch: dict[str, torch.Tensor]) -> str:
    return "generation" if "image_codes" in batch else "understanding"


def _schedule(optimizer: torch.optim.Optimizer, optim: OptimConfig, steps: int):
    return get_cosine_schedule_with_warmup(optimizer, int(optim.warmup_ratio * steps), steps)


def learning_rates(optim: OptimConfig, steps: int) -> list[float]:
    """The learning rate of each of the ``steps`` optimizer steps that ``train`` takes."""
    optimizer = torch.optim.SGD([torch.zeros(1, requires_grad=True)], lr=optim.lr)
    scheduler = _schedule(optimizer, optim, steps)
    rates = []
    for _ in range(steps):
        rates.append(optimizer.param_groups[0]["lr"])
        optimizer.step()
        scheduler.step()
    return rates


def train(
    model: torch.nn.Module,
    batches: Iterable[dict[str, torch.Tensor]],
    steps: int,
    optim: OptimConfig,
    device: torch.device,
    description: str = "train",
    hooks: Sequence[TrainingHook] = (),
    modality_parameters: dict[str, set[int]] | None = None,
) -> list[float]:
    """AdamW with linear warmup and cosine decay, gradient clipping, an optional FedProx term,
    and the ``hooks`` of a client algorithm (see ``TrainingHook``).

    ``modality_parameters`` (modality -> ids of its trainable parameters) makes each batch train only
    its modality's adapter (FedUMM §3.4's per-modality adapters): the others are frozen for that
    step, so the generation adapter learns from text-to-image batches alone and the understanding
    adapter from the other batches alone, though both run through the same language model.

    Returns the task loss of every step (without the proximal term or the hooks' terms).
    """
    params = [p for p in model.parameters() if p.requires_grad]
    if not params:
        raise ValueError("no trainable parameters: check the tuning mode and the LoRA targets")
    optimizer = torch.optim.AdamW(params, lr=optim.lr, weight_decay=optim.weight_decay)
    scheduler = _schedule(optimizer, optim, steps)
    anchor = (
        {n: p.detach().clone() for n, p in model.named_parameters() if p.requires_grad}
        if optim.prox_mu > 0
        else None
    )
    train_mode(model)
    losses = []
    progress = tqdm(zip(range(steps), batches), total=steps, desc=description, mininterval=5)
    for _, batch in progress:
        batch = {key: value.to(device) for key, value in batch.items()}
        if modality_parameters is not None:
            active = modality_parameters[batch_modality(batch)]
            for param in params:
                param.requires_grad_(id(param) in active)
        for hook in hooks:
            hook.before_forward(model, batch)
        outputs, loss = forward_loss(model, batch)
        objective = loss if anchor is None else loss + optim.prox_mu / 2 * proximal_term(model, anchor)
        for hook in hooks:
            extra = hook.extra_loss(model, batch, outputs)
            if extra is not None:
                objective = objective + extra
        objective.backward()
        for hook in hooks:
            hook.after_backward(model)
        if optim.grad_clip is not None:
            torch.nn.utils.clip_grad_norm_(params, optim.grad_clip)
        optimizer.step()
        scheduler.step()
        optimizer.zero_grad(set_to_none=True)
        losses.append(loss.item())
        progress.set_postfix(loss=f"{loss.item():.4f}", refresh=False)
    for param in params:
        param.requires_grad_(True)
    if len(losses) < steps:
        raise RuntimeError(f"{description}: data ran out after {len(losses)} of {steps} steps")
    return losses

