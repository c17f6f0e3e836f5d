"""Text-to-image generation with a unified model (Janus): the training loss and classifier-free sampling.

Janus' ``forward`` has no image-generation loss, so it is built from the model's parts, as Janus
trains it (Chen et al., 2025): the language model reads the prompt's token embeddings followed by the
image's codes through ``generation_embeddings`` and ``generation_aligner``, and ``generation_head``
predicts each code from the hidden state before it; the loss is the cross-entropy over the codes.
Codes come from an image tokenizer (``fedumm.models.image_tokenizers``). Classifier-free guidance
(Ho & Salimans, 2022) trains with the prompt dropped for a share of examples and samples from
``uncond + s · (cond − uncond)`` of the head's logits. Prompts are LEFT-padded and end with the
image-start token (Janus' ``<begin_of_image>``); dropping a prompt masks every token but that last
one, so the unconditional branch sees the same single token for every prompt.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F


@dataclass(frozen=True)
class GenerationSettings:
    """A model entry's ``generation`` block (config/README.md, "Models"), with its defaults."""

    image_tokenizer: str
    guidance_scale: float = 3.0
    prompt_dropout: float = 0.1
    temperature: float = 1.0


def _janus(model: torch.nn.Module) -> torch.nn.Module:
    """The JanusForConditionalGeneration inside a PeftModel (its LoRA layers stay active)."""
    return model.get_base_model() if hasattr(model, "get_base_model") else model


def _hidden(janus, prompt_ids: torch.Tensor, prompt_mask: torch.Tensor, codes: torch.Tensor) -> torch.Tensor:
    """Last hidden states of the language model over [prompt ; codes]."""
    text = janus.get_input_embeddings()(prompt_ids)
    image = janus.model.generation_aligner(janus.model.generation_embeddings(codes))
    embeds = torch.cat([text, image.to(text.dtype)], dim=1)
    mask = torch.cat([prompt_mask, prompt_mask.new_ones(codes.shape)], dim=1)
    positions = (mask.long().cumsum(-1) - 1).clamp(min=0)
    return janus.model.language_model(inputs_embeds=embeds, attention_mask=mask, position_ids=positions).last_hidden_state


def drop_prompts(prompt_mask: torch.Tensor, rate: float, generator: torch.Generator | None) -> torch.Tensor:
    """The attention mask with each prompt dropped (only its image-start token kept) at probability
    ``rate``; ``generator`` None draws from torch's global generator, which the job seeds."""
    if rate == 0:
        return prompt_mask
    dropped = torch.rand(prompt_mask.shape[0], generator=generator) < rate
    mask = prompt_mask.clone()
    mask[dropped, :-1] = 0
    return mask


def generation_loss(model: torch.nn.Module, prompt_ids: torch.Tensor, prompt_mask: torch.Tensor,
                    codes: torch.Tensor) -> torch.Tensor:
    """Mean cross-entropy of ``generation_head`` on each code given the prompt and the codes before it.

    ``prompt_ids``/``prompt_mask`` are LEFT-padded prompts [B, P]; ``codes`` [B, N] the image codes.
    """
    janus = _janus(model)
    hidden = _hidden(janus, prompt_ids, prompt_mask, codes[:, :-1])
    prompt_length = prompt_ids.shape[1]
    logits = janus.model.generation_head(hidden[:, prompt_length - 1:])
    return F.cross_entropy(logits.reshape(-1, logits.shape[-1]).float(), codes.reshape(-1))


@torch.no_grad()
def sample_codes(model: torch.nn.Module, prompt_ids: torch.Tensor, prompt_mask: torch.Tensor, tokens: int,
                 num_codes: int, guidance_scale: float, generator: torch.Generator,
                 temperature: float = 1.0) -> torch.Tensor:
    """``tokens`` codes per prompt [B, tokens], sampled one by one with classifier-free guidance.

    The unconditional branch masks every prompt token but the last; ``temperature == 0`` takes the
    argmax. Codes beyond ``num_codes`` (the tokenizer's) are never drawn.
    """
    janus = _janus(model)
    unconditional = prompt_mask.clone()
    unconditional[:, :-1] = 0
    codes = prompt_ids.new_zeros(prompt_ids.shape[0], 0)
    for _ in range(tokens):
        logits = []
        for mask in (prompt_mask, unconditional):
            hidden = _hidden(janus, prompt_ids, mask, codes)
            logits.append(janus.model.generation_head(hidden[:, -1]).float()[:, :num_codes])
        guided = logits[1] + guidance_scale * (logits[0] - logits[1])
        if temperature == 0:
            step = guided.argmax(dim=-1)
        else:
            probabilities = torch.softmax(guided / temperature, dim=-1)
            step = torch.multinomial(probabilities.cpu(), 1, generator=generator).squeeze(-1).to(codes.device)
        codes = torch.cat([codes, step[:, None]], dim=1)
    return codes
