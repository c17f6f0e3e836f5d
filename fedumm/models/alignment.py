"""Client-side cross-modal alignment error, the e_k of Fed-CMP's reliability weights (Xiong et al., 2026, Eq. 5).

For sample i, v̄_i is the mean of its projected visual tokens (the connector's outputs, which live
in the language model's embedding space) and t̄_i the mean of the input embeddings of its text
tokens. The error of a sample and of a client are

    e_i = 1 − cos(v̄_i, t̄_i),        e_k = (1 / N_k) Σ_i e_i        (0 ≤ e_i ≤ 2).

The paper's formula was lost in extraction; its prose fixes v̄_i, t̄_i and the mean over the
client's samples. The distance between them is taken as the cosine dissimilarity, the measure
the paper itself uses for its other comparison of directions (Eq. 8), because it is scale-free:
LLaVA-style projected visual tokens have far larger norms than text embeddings, and e_k enters
the weights as exp(−λ e_k) with λ of order 1 (the paper's λ ∈ {0.5, 1, 2}), which a squared
Euclidean distance in raw embedding units would make all-or-nothing. See docs/FEDCMP.md.
"""

from __future__ import annotations

import contextlib
from typing import Iterable, Iterator

import torch
from torch import nn

from fedumm.models.vlm import VisionLanguageModel, unwrap


@contextlib.contextmanager
def _eval_mode(module: nn.Module) -> Iterator[None]:
    """Eval mode (no dropout, e.g. LoRA dropout) for the block; every submodule's own mode is restored."""
    modes = [(m, m.training) for m in module.modules()]
    module.eval()
    try:
        yield
    finally:
        for m, training in modes:
            m.training = training


def sample_alignment_errors(
    model: nn.Module,
    input_ids: torch.Tensor,
    attention_mask: torch.Tensor,
    pixel_values: torch.Tensor | None = None,
    image_features: torch.Tensor | None = None,
) -> torch.Tensor:
    """e_i = 1 − cos(v̄_i, t̄_i) for every sample of a batch, float64 [B], without gradients.

    ``model`` is a `VisionLanguageModel` or a PeftModel around one (its trained connector copy is
    used). t̄_i averages the embeddings of the tokens where ``attention_mask`` is 1 (the whole text
    of a training example: prompt, target and eos). Pass exactly one of ``pixel_values`` /
    ``image_features`` (cached vision-tower features), as for the model's forward.
    """
    vlm: VisionLanguageModel = unwrap(model)
    embeddings = vlm.language_model.get_input_embeddings()
    device = embeddings.weight.device
    mask = attention_mask.to(device=device, dtype=torch.float64)
    if bool((mask.sum(dim=1) == 0).any()):
        raise ValueError("alignment error: a sample has no text token (attention_mask all zero)")
    with torch.no_grad(), _eval_mode(vlm):
        # The same path as the forward pass: vision tower (unless features are cached), then connector.
        visual = vlm._visual_tokens(
            None if pixel_values is None else pixel_values.to(device),
            None if image_features is None else image_features.to(device),
        )
        text = embeddings(input_ids.to(device))
        visual_mean = visual.to(torch.float64).mean(dim=1)
        text_mean = (text.to(torch.float64) * mask.unsqueeze(-1)).sum(dim=1) / mask.sum(dim=1, keepdim=True)
        cosine = torch.nn.functional.cosine_similarity(visual_mean, text_mean, dim=-1)
    # detach: an identity connector returns its input, which may carry a graph
    return (1.0 - cosine).clamp(0.0, 2.0).detach()


def alignment_error(
    model: nn.Module,
    input_ids: torch.Tensor,
    attention_mask: torch.Tensor,
    pixel_values: torch.Tensor | None = None,
    image_features: torch.Tensor | None = None,
) -> float:
    """The mean of `sample_alignment_errors` over one batch."""
    return float(sample_alignment_errors(model, input_ids, attention_mask, pixel_values, image_features).mean())


def mean_alignment_error(model: nn.Module, batches: Iterable[dict[str, torch.Tensor]]) -> float:
    """e_k: the per-sample mean over every sample of ``batches`` (dicts as the training loop gets them;
    keys other than input_ids, attention_mask, pixel_values and image_features are ignored)."""
    total = torch.zeros((), dtype=torch.float64)
    count = 0
    for batch in batches:
        errors = sample_alignment_errors(
            model, batch["input_ids"], batch["attention_mask"], batch.get("pixel_values"), batch.get("image_features")
        )
        total += errors.sum().cpu()
        count += errors.numel()
    if count == 0:
        raise ValueError("alignment error: no samples")
    return float(total / count)
