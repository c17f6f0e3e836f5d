"""Composable vision-language model (LLaVA recipe) and its base-model artifact.

Architecture (LLaVA / LLaVA-1.5, Liu et al. 2023): a ViT vision tower (CLIP or SigLIP) whose
hidden states at `select_layer` (LLaVA uses -2) are projected by a connector (LLaVA-1.5
`mlp2x_gelu`: Linear, GELU, Linear) into the language model's embedding space. Here the visual
tokens are prepended to the text token embeddings of a causal language model.

Base model directory (`save_base` / `load_base`): `spec.json`, `tokenizer/`, and
`weights.safetensors` holding only the parts that were trained (never the hub weights).
Adapters on top of it: `fedumm.models.adapters`.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
from pathlib import Path
from typing import Iterator

import torch
from safetensors.torch import load_model, save_model
from torch import nn
from transformers import (
    AutoConfig,
    AutoModel,
    AutoModelForCausalLM,
    AutoTokenizer,
    CLIPVisionModel,
    PreTrainedModel,
    PreTrainedTokenizerBase,
    SiglipVisionModel,
)

from fedumm.artifacts import BASE_SPEC, SAFETENSORS_METADATA
from fedumm.io import atomic_dir, atomic_write_json
from fedumm.models.text import IGNORE_INDEX

PARTS = ("vision_tower", "connector", "language_model")
"""Submodule names of `VisionLanguageModel`; also the first component of every parameter name."""

SELECT_FEATURES = ("patch", "cls_patch")
MLP_GELU = re.compile(r"^mlp(\d+)x_gelu$")  # LLaVA-1.5 `build_vision_projector`

# Vision checkpoints are loaded as their vision-only model so that a full CLIP/SigLIP checkpoint
# (image + text towers) contributes only its image tower.
VISION_CLASSES: dict[str, type[PreTrainedModel]] = {
    "clip": CLIPVisionModel,
    "clip_vision_model": CLIPVisionModel,
    "siglip": SiglipVisionModel,
    "siglip_vision_model": SiglipVisionModel,
}

TOKENIZER_DIR, WEIGHTS_FILE = "tokenizer", "weights.safetensors"


# ----------------------------------------------------------------------------- model


class VisionLanguageModel(nn.Module):
    """Vision tower -> connector -> causal LM, with visual tokens prepended to the text.

    `init_seed` is the seed `build_vlm` drew random-init parts with; `save_base` records it so that
    `load_base` can rebuild parts that were not saved.
    """

    def __init__(
        self,
        vision_tower: PreTrainedModel,
        connector: nn.Module,
        language_model: PreTrainedModel,
        select_layer: int = -2,
        select_feature: str = "patch",
        init_seed: int = 0,
    ) -> None:
        super().__init__()
        if select_feature not in SELECT_FEATURES:
            raise ValueError(f"select_feature must be one of {SELECT_FEATURES}, got {select_feature!r}")
        self.vision_tower = vision_tower
        self.connector = connector
        self.language_model = language_model
        self.select_layer = select_layer
        self.select_feature = select_feature
        self.init_seed = init_seed

    def get_output_embeddings(self) -> nn.Module:
        """The language model's head, as transformers models expose theirs."""
        return self.language_model.get_output_embeddings()

    def encode_images(self, pixel_values: torch.Tensor) -> torch.Tensor:
        """Visual features [B, T, Dv]: hidden states at `select_layer`, without CLS for "patch"."""
        outputs = self.vision_tower(pixel_values.to(self.vision_tower.dtype), output_hidden_states=True)
        features = outputs.hidden_states[self.select_layer]
        config = self.vision_tower.config
        has_cls = features.shape[1] == (config.image_size // config.patch_size) ** 2 + 1
        if self.select_feature == "patch" and has_cls:
            features = features[:, 1:]
        return features

    def _visual_tokens(self, pixel_values: torch.Tensor | None, image_features: torch.Tensor | None) -> torch.Tensor:
        if (pixel_values is None) == (image_features is None):
            raise ValueError("pass exactly one of pixel_values / image_features")
        features = self.encode_images(pixel_values) if image_features is None else image_features
        embedding = self.language_model.get_input_embeddings().weight
        return self.connector(features.to(embedding.dtype))

    def _merge(
        self,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor,
        labels: torch.Tensor | None,
        pixel_values: torch.Tensor | None,
        image_features: torch.Tensor | None,
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
        """Prepend visual tokens: embeddings, attention mask (ones) and labels (-100) are extended."""
        visual = self._visual_tokens(pixel_values, image_features)
        batch, n_visual = visual.shape[:2]
        text = self.language_model.get_input_embeddings()(input_ids)
        embeds = torch.cat([visual, text], dim=1)
        ones = attention_mask.new_ones(batch, n_visual)
        mask = torch.cat([ones, attention_mask], dim=1)
        if labels is not None:
            labels = torch.cat([labels.new_full((batch, n_visual), IGNORE_INDEX), labels], dim=1)
        return embeds, mask, labels

    def forward(
        self,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor,
        labels: torch.Tensor | None = None,
        pixel_values: torch.Tensor | None = None,
        image_features: torch.Tensor | None = None,
    ):
        """Language-model output (with `.loss` when `labels` are given) on [visual tokens, text]."""
        embeds, mask, labels = self._merge(input_ids, attention_mask, labels, pixel_values, image_features)
        return self.language_model(
            inputs_embeds=embeds,
            attention_mask=mask,
            # Positions count only attended tokens, as `generate` does, so left padding is harmless.
            position_ids=(mask.long().cumsum(-1) - 1).clamp(min=0),
            labels=labels,
            use_cache=False,
        )

    @torch.no_grad()
    def generate(
        self,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor,
        pixel_values: torch.Tensor | None = None,
        image_features: torch.Tensor | None = None,
        max_new_tokens: int = 8,
        eos_token_id: int | None = None,
        pad_token_id: int | None = None,
    ) -> torch.Tensor:
        """Greedy decoding from LEFT-padded prompts; returns only the new tokens [B, <=max_new_tokens].

        Pass the tokenizer's `eos_token_id` / `pad_token_id`: `None` falls back to the language model's
        generation config, whose ids need not match the tokenizer (e.g. a random-init Llama's eos is 2).
        Rows that finish early are padded with `pad_token_id`.

        Uses `language_model.generate(inputs_embeds=...)`, which for decoder-only models returns just
        the generated ids and derives position ids from the attention mask (cumsum), so the padding
        between visual tokens and a left-padded prompt does not shift positions.
        """
        embeds, mask, _ = self._merge(input_ids, attention_mask, None, pixel_values, image_features)
        return self.language_model.generate(
            inputs_embeds=embeds,
            attention_mask=mask,
            max_new_tokens=max_new_tokens,
            do_sample=False,
            num_beams=1,
            eos_token_id=eos_token_id,
            pad_token_id=pad_token_id,
        )


def unwrap(model: nn.Module) -> VisionLanguageModel:
    """The `VisionLanguageModel` inside a `PeftModel` (LoRA layers stay active) or a dense delta
    (`fedumm.models.dense.DenseDelta`), or `model` itself."""
    inner = model.get_base_model() if hasattr(model, "get_base_model") else model
    if not isinstance(inner, VisionLanguageModel):
        raise TypeError(f"expected a VisionLanguageModel or a PeftModel around one, got {type(model).__name__}")
    return inner


def build_connector(kind: str, vision_dim: int, text_dim: int) -> nn.Module:
    """Connector from LLaVA-1.5 `build_vision_projector`: "linear", "mlp{N}x_gelu" or "identity".

    "mlp{N}x_gelu" is Linear(dv, dl) followed by N-1 times [GELU, Linear(dl, dl)], so parameter names
    (`0.weight`, `2.weight`, ...) match LLaVA's `mm_projector`.
    """
    if kind == "linear":
        return nn.Linear(vision_dim, text_dim)
    if kind == "identity":
        if vision_dim != text_dim:
            raise ValueError(f"connector 'identity' needs equal dims, got vision {vision_dim} and text {text_dim}")
        return nn.Identity()
    match = MLP_GELU.match(kind)
    if match is None or int(match.group(1)) < 1:
        raise ValueError(f"connector must be 'linear', 'identity' or 'mlp<N>x_gelu' with N >= 1, got {kind!r}")
    layers: list[nn.Module] = [nn.Linear(vision_dim, text_dim)]
    for _ in range(int(match.group(1)) - 1):
        layers += [nn.GELU(), nn.Linear(text_dim, text_dim)]
    return nn.Sequential(*layers)


# ----------------------------------------------------------------------------- spec and building

SPEC_DEFAULTS = {"select_layer": -2, "select_feature": "patch", "connector": "mlp2x_gelu", "dtype": "float32"}


def validate_spec(spec: dict) -> dict:
    """The model spec with defaults filled in; raises ValueError naming the offending key."""
    unknown = set(spec) - {"vision", "language", "tokenizer", *SPEC_DEFAULTS}
    if unknown:
        raise ValueError(f"model spec: unknown keys {sorted(unknown)}")
    out = {**SPEC_DEFAULTS, **spec}
    for key in ("vision", "language"):
        part = out.get(key)
        if not isinstance(part, dict) or set(part) not in ({"id"}, {"config"}):
            raise ValueError(f"model spec: `{key}` must be a mapping with exactly one of `id` or `config`, got {part!r}")
        if "config" in part and not (isinstance(part["config"], dict) and "model_type" in part["config"]):
            raise ValueError(f"model spec: `{key}.config` must be a mapping with a `model_type`")
    tokenizer = out.get("tokenizer")
    if not isinstance(tokenizer, dict) or not ("id" in tokenizer or tokenizer.get("wordlevel") is True):
        raise ValueError(f"model spec: `tokenizer` must be {{id: ...}} or {{wordlevel: true}}, got {tokenizer!r}")
    if not isinstance(out["select_layer"], int) or isinstance(out["select_layer"], bool):
        raise ValueError(f"model spec: `select_layer` must be an integer, got {out['select_layer']!r}")
    if out["select_feature"] not in SELECT_FEATURES:
        raise ValueError(f"model spec: `select_feature` must be one of {SELECT_FEATURES}, got {out['select_feature']!r}")
    if not (out["connector"] in ("linear", "identity") or MLP_GELU.match(str(out["connector"]))):
        raise ValueError(f"model spec: `connector` must be 'linear', 'identity' or 'mlp<N>x_gelu', got {out['connector']!r}")
    if not isinstance(getattr(torch, str(out["dtype"]), None), torch.dtype):
        raise ValueError(f"model spec: `dtype` must be a torch dtype name, got {out['dtype']!r}")
    return out


@contextlib.contextmanager
def seeded(seed: int) -> Iterator[None]:
    """Seed torch for a random init without disturbing the caller's RNG streams."""
    with torch.random.fork_rng(devices=range(torch.cuda.device_count())):
        torch.manual_seed(seed)
        yield


def _vision_tower(part: dict, dtype: torch.dtype) -> PreTrainedModel:
    if "config" in part:
        return AutoModel.from_config(AutoConfig.for_model(**part["config"]))
    model_type = AutoConfig.from_pretrained(part["id"]).model_type
    if model_type not in VISION_CLASSES:
        raise ValueError(f"model spec: `vision.id` has model_type {model_type!r}; supported: {sorted(VISION_CLASSES)}")
    return VISION_CLASSES[model_type].from_pretrained(part["id"], dtype=dtype)


def _language_model(part: dict, vocab_size: int | None, dtype: torch.dtype) -> PreTrainedModel:
    if "config" in part:
        config = dict(part["config"], **({"vocab_size": vocab_size} if vocab_size is not None else {}))
        return AutoModelForCausalLM.from_config(AutoConfig.for_model(**config))
    model = AutoModelForCausalLM.from_pretrained(part["id"], dtype=dtype)
    if vocab_size is not None and vocab_size > model.get_input_embeddings().num_embeddings:
        raise ValueError(f"tokenizer has {vocab_size} tokens but `language.id` embeds only "
                         f"{model.get_input_embeddings().num_embeddings}")
    return model


def build_vlm(spec: dict, vocab_size: int | None, seed: int) -> VisionLanguageModel:
    """Assemble a VLM from a model spec: `id` parts via `from_pretrained`, `config` parts randomly.

    Random parts are drawn under seeds `seed` (vision), `seed + 1` (language), `seed + 2` (connector),
    so that swapping one part between hub and inline leaves the others' initialisation unchanged.
    `vocab_size` sets the inline language model's vocabulary (from the tokenizer).
    """
    spec = validate_spec(spec)
    dtype = getattr(torch, spec["dtype"])
    with seeded(seed):
        vision = _vision_tower(spec["vision"], dtype)
    with seeded(seed + 1):
        language = _language_model(spec["language"], vocab_size, dtype)
    with seeded(seed + 2):
        connector = build_connector(spec["connector"], vision.config.hidden_size, language.config.hidden_size)
    model = VisionLanguageModel(vision, connector, language, spec["select_layer"], spec["select_feature"], seed)
    return model.to(dtype)


# ----------------------------------------------------------------------------- atomic directories


# ----------------------------------------------------------------------------- base model artifact


def _parts(model: VisionLanguageModel, names: list[str]) -> nn.ModuleDict:
    unknown = set(names) - set(PARTS)
    if unknown:
        raise ValueError(f"trained_parts must be among {PARTS}, got {sorted(unknown)}")
    return nn.ModuleDict({name: getattr(model, name) for name in PARTS if name in names})


def save_base(
    model: VisionLanguageModel,
    tokenizer: PreTrainedTokenizerBase,
    spec: dict,
    out_dir: str | os.PathLike,
    trained_parts: list[str],
) -> None:
    """Write the base-model directory atomically and byte-reproducibly.

    `spec.json` = {"spec": spec with an inline LM's vocab_size resolved, "seed": model.init_seed,
    "trained_parts": [...]}; `tokenizer/`; `weights.safetensors` = state dicts of `trained_parts`
    under their submodule prefixes (e.g. `connector.0.weight`).
    """
    spec = validate_spec(spec)
    if "config" in spec["language"]:
        language_config = dict(spec["language"]["config"], vocab_size=model.language_model.config.vocab_size)
        spec = {**spec, "language": {"config": language_config}}
    parts = _parts(model, trained_parts)
    with atomic_dir(out_dir) as tmp:
        atomic_write_json(tmp / BASE_SPEC, {"spec": spec, "seed": model.init_seed, "trained_parts": list(parts)})
        tokenizer.save_pretrained(tmp / TOKENIZER_DIR)
        # save_model drops aliases of tied weights (safetensors forbids shared storage); load_model restores them.
        save_model(parts, str(tmp / WEIGHTS_FILE), metadata=SAFETENSORS_METADATA)


def load_base(base_dir: str | os.PathLike, device: str | torch.device = "cpu") -> tuple[VisionLanguageModel, PreTrainedTokenizerBase, dict]:
    """Rebuild a `save_base` directory: (model, tokenizer, spec), strictly loading the trained parts."""
    base = Path(base_dir)
    record = json.loads((base / BASE_SPEC).read_text())
    tokenizer = AutoTokenizer.from_pretrained(base / TOKENIZER_DIR)
    model = build_vlm(record["spec"], None, record["seed"])
    load_model(_parts(model, record["trained_parts"]), base / WEIGHTS_FILE, strict=True)
    return model.to(device), tokenizer, record["spec"]
