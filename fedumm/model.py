"""Composable vision-language model (LLaVA recipe), its base-model artifact, and PEFT adapters.

Architecture (LLaVA / LLaVA-1.5, Liu et al. 2023): a ViT vision tower (CLIP or SigLIP) whose
hidden states at `select_layer` (LLaVA uses -2) are projected by a connector (LLaVA-1.5
`mlp2x_gelu`: Linear, GELU, Linear) into the language model's embedding space. Here the visual
tokens are prepended to the text token embeddings of a causal language model.

Artifacts:
- base model directory (`save_base` / `load_base`): `spec.json`, `tokenizer/`, and
  `weights.safetensors` holding only the parts that were trained (never the hub weights);
- adapter directory (`save_adapter` / `load_adapter`): the files of `PeftModel.save_pretrained`
  (`adapter_config.json`, `adapter_model.safetensors`), written byte-deterministically, so that
  `PeftModel.from_pretrained(base, path)` loads LoRA weights and the connector.

PEFT usage: `PeftModel` forwards `peft_model(**batch)` to `VisionLanguageModel.forward`; for
generation call `unwrap(peft_model).generate(...)` (LoRA layers and the trained connector copy
stay active inside the unwrapped model).
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

import numpy as np
import peft
import torch
from PIL import Image
from safetensors.torch import load_model, save_file, save_model
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
from transformers.utils import cached_file

from fedumm.text import IGNORE_INDEX

PARTS = ("vision_tower", "connector", "language_model")
"""Submodule names of `VisionLanguageModel`; also the first component of every parameter name."""

GROUPS = {"vision_tower": "vision", "language_model": "language", "connector": "connector"}
"""Parameter group (per-modality adapter) of each submodule."""

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

# OpenAI CLIP normalisation, used when no preprocessor_config.json is available.
CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
CLIP_STD = (0.26862954, 0.26130258, 0.27577711)

SPEC_FILE, TOKENIZER_DIR, WEIGHTS_FILE = "spec.json", "tokenizer", "weights.safetensors"
ADAPTER_CONFIG_FILE, ADAPTER_WEIGHTS_FILE = peft.utils.CONFIG_NAME, peft.utils.SAFETENSORS_WEIGHTS_NAME
SAFETENSORS_METADATA = {"format": "pt"}  # fixed metadata keeps the files byte-identical


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
    """The `VisionLanguageModel` inside a `PeftModel` (LoRA layers stay active), or `model` itself."""
    inner = model.get_base_model() if isinstance(model, peft.PeftModel) else model
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
def _seeded(seed: int) -> Iterator[None]:
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
    with _seeded(seed):
        vision = _vision_tower(spec["vision"], dtype)
    with _seeded(seed + 1):
        language = _language_model(spec["language"], vocab_size, dtype)
    with _seeded(seed + 2):
        connector = build_connector(spec["connector"], vision.config.hidden_size, language.config.hidden_size)
    model = VisionLanguageModel(vision, connector, language, spec["select_layer"], spec["select_feature"], seed)
    return model.to(dtype)


# ----------------------------------------------------------------------------- image preprocessing


@dataclass(frozen=True)
class ImageTransform:
    """CLIP-style preprocessing in PIL/numpy/torch (no torchvision), picklable for data loaders.

    Resize (bicubic) either the shortest edge to `shortest_edge` or exactly to `resize` (h, w), then
    centre-crop to `crop` (h, w) if given, scale to [0, 1] and normalise with `mean` / `std`.
    """

    shortest_edge: int | None
    resize: tuple[int, int] | None
    crop: tuple[int, int] | None
    mean: tuple[float, float, float]
    std: tuple[float, float, float]

    def __call__(self, image: Image.Image) -> torch.Tensor:
        image = image.convert("RGB")
        if self.shortest_edge is not None:
            width, height = image.size
            scale = self.shortest_edge / min(width, height)
            # Same rounding as transformers' get_resize_output_image_size (int() of the long edge).
            size = (self.shortest_edge, int(height * scale)) if width <= height else (int(width * scale), self.shortest_edge)
            image = image.resize(size, Image.Resampling.BICUBIC)
        else:
            image = image.resize((self.resize[1], self.resize[0]), Image.Resampling.BICUBIC)
        if self.crop is not None:
            width, height = image.size
            top, left = (height - self.crop[0]) // 2, (width - self.crop[1]) // 2
            image = image.crop((left, top, left + self.crop[1], top + self.crop[0]))
        pixels = torch.from_numpy(np.asarray(image, dtype=np.float32) / 255.0).permute(2, 0, 1)
        mean = torch.tensor(self.mean).view(3, 1, 1)
        std = torch.tensor(self.std).view(3, 1, 1)
        return (pixels - mean) / std


def _hw(value: int | dict) -> tuple[int, int]:
    return (value, value) if isinstance(value, int) else (value["height"], value["width"])


def _vision_image_size(config) -> int:
    return (config.vision_config if hasattr(config, "vision_config") else config).image_size


def transform_from_preprocessor(pre: dict, image_size: int) -> ImageTransform:
    """An `ImageTransform` from a `preprocessor_config.json` mapping (CLIP or SigLIP image processors).

    `size` is read as CLIPImageProcessor does: an int or {"shortest_edge": n} resizes the shortest
    edge, {"height", "width"} resizes exactly (SigLIP). Shortest-edge resizing is followed by a
    centre crop to `crop_size` unless `do_center_crop` is false.
    """
    size = pre.get("size", image_size)
    shortest = size if isinstance(size, int) else size.get("shortest_edge")
    do_crop = pre.get("do_center_crop", shortest is not None)
    return ImageTransform(
        shortest_edge=shortest,
        resize=None if shortest is not None else _hw(size),
        crop=_hw(pre.get("crop_size", image_size)) if do_crop else None,
        mean=tuple(pre.get("image_mean", CLIP_MEAN)),
        std=tuple(pre.get("image_std", CLIP_STD)),
    )


def image_transform(spec_or_dir: dict | str | os.PathLike) -> ImageTransform:
    """Preprocessing for a model spec (or a vision checkpoint id/directory).

    A checkpoint's `preprocessor_config.json` is honoured (`transform_from_preprocessor`); inline
    configs and checkpoints without that file resize the shortest edge to the vision config's
    `image_size`, centre-crop a square, and normalise with CLIP's mean/std.
    """
    source = spec_or_dir["vision"] if isinstance(spec_or_dir, dict) else {"id": str(spec_or_dir)}
    if "config" in source:
        return transform_from_preprocessor({}, AutoConfig.for_model(**source["config"]).image_size)
    image_size = _vision_image_size(AutoConfig.from_pretrained(source["id"]))
    path = cached_file(source["id"], "preprocessor_config.json", _raise_exceptions_for_missing_entries=False)
    pre = json.loads(Path(path).read_text()) if path is not None else {}
    return transform_from_preprocessor(pre, image_size)


# ----------------------------------------------------------------------------- atomic directories


@contextlib.contextmanager
def _atomic_dir(out_dir: str | os.PathLike) -> Iterator[Path]:
    """Yield a temp dir next to `out_dir` that replaces `out_dir` only if the block succeeds."""
    out = Path(out_dir)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.", dir=out.parent))
    try:
        yield tmp
        tmp.chmod(0o755)  # mkdtemp creates 0700; artifacts are shared between jobs and users
        if out.exists():
            # A non-empty directory cannot be replaced in one rename: move it aside first.
            old = Path(tempfile.mkdtemp(prefix=f".{out.name}.old.", dir=out.parent))
            os.replace(out, old / out.name)
            os.replace(tmp, out)
            shutil.rmtree(old)
        else:
            os.replace(tmp, out)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp)


def _write_json(path: Path, data: dict) -> None:
    path.write_text(json.dumps(data, indent=2, sort_keys=True) + "\n")


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
    with _atomic_dir(out_dir) as tmp:
        _write_json(tmp / SPEC_FILE, {"spec": spec, "seed": model.init_seed, "trained_parts": list(parts)})
        tokenizer.save_pretrained(tmp / TOKENIZER_DIR)
        # save_model drops aliases of tied weights (safetensors forbids shared storage); load_model restores them.
        save_model(parts, str(tmp / WEIGHTS_FILE), metadata=SAFETENSORS_METADATA)


def load_base(base_dir: str | os.PathLike, device: str | torch.device = "cpu") -> tuple[VisionLanguageModel, PreTrainedTokenizerBase, dict]:
    """Rebuild a `save_base` directory: (model, tokenizer, spec), strictly loading the trained parts."""
    base = Path(base_dir)
    record = json.loads((base / SPEC_FILE).read_text())
    tokenizer = AutoTokenizer.from_pretrained(base / TOKENIZER_DIR)
    model = build_vlm(record["spec"], None, record["seed"])
    load_model(_parts(model, record["trained_parts"]), base / WEIGHTS_FILE, strict=True)
    return model.to(device), tokenizer, record["spec"]


# ----------------------------------------------------------------------------- adapters


def _module_regex(prefix: str, names: list[str]) -> str:
    return rf"{re.escape(prefix)}\..*\.(?:{'|'.join(re.escape(name) for name in names)})"


def adapter_config(lora: dict, connector_trainable: bool) -> peft.LoraConfig:
    """LoRA on `lora["target_modules"]` inside the language model and `lora["vision_target_modules"]`
    inside the vision tower (one full-match regex over module names), plus the connector as a
    `modules_to_save` copy when `connector_trainable`.
    """
    branches = [
        _module_regex(prefix, list(lora[key]))
        for prefix, key in (("language_model", "target_modules"), ("vision_tower", "vision_target_modules"))
        if lora.get(key)
    ]
    if not branches:
        raise ValueError("lora: at least one of `target_modules` / `vision_target_modules` must be non-empty")
    return peft.LoraConfig(
        r=lora["r"],
        lora_alpha=lora["alpha"],
        lora_dropout=lora.get("dropout", 0.0),
        target_modules=f"^(?:{'|'.join(branches)})$",
        modules_to_save=["connector"] if connector_trainable else None,
        bias="none",
    )


def attach_adapter(model: VisionLanguageModel, config: peft.LoraConfig, seed: int) -> peft.PeftModel:
    """Wrap `model` in a `PeftModel`; LoRA A matrices are drawn under `seed` (B starts at zero)."""
    with _seeded(seed):
        return peft.get_peft_model(model, config)


def load_adapter(base_model: VisionLanguageModel, adapter_dir: str | os.PathLike, is_trainable: bool) -> peft.PeftModel:
    """Load an adapter directory onto `base_model` (the artifact contract: plain `PeftModel.from_pretrained`)."""
    return peft.PeftModel.from_pretrained(base_model, str(adapter_dir), is_trainable=is_trainable)


def parameter_group(name: str) -> str:
    """"vision" / "language" / "connector" for an adapter state key or a PeftModel parameter name."""
    for prefix in ("base_model.model.", ""):
        if name.startswith(prefix):
            part = name[len(prefix):].split(".", 1)[0]
            if part in GROUPS:
                return GROUPS[part]
    raise ValueError(f"parameter {name!r} belongs to none of {PARTS}")


def adapter_state(model: peft.PeftModel) -> dict[str, torch.Tensor]:
    """The adapter tensors exactly as they go into adapter_model.safetensors."""
    return peft.get_peft_model_state_dict(model)


def _check_state_keys(model: peft.PeftModel, state: dict[str, torch.Tensor]) -> None:
    expected = set(adapter_state(model))
    if set(state) != expected:
        raise ValueError(f"adapter state mismatch: missing {sorted(expected - set(state))}, "
                         f"unexpected {sorted(set(state) - expected)}")


def set_adapter_state(model: peft.PeftModel, state: dict[str, torch.Tensor]) -> None:
    """Load `adapter_state`-style tensors into `model`; the keys must be exactly the adapter's keys."""
    _check_state_keys(model, state)
    peft.set_peft_model_state_dict(model, state)


def _is_adapter_param(name: str) -> bool:
    # peft names LoRA tensors `lora_*` and the trained copy of a modules_to_save module `modules_to_save.<adapter>`.
    return ".lora_" in name or ".modules_to_save." in name


def adapter_parameters(model: peft.PeftModel) -> dict[str, nn.Parameter]:
    """The parameters behind `adapter_state`, under its keys (without peft's adapter name).

    peft names a parameter `….lora_A.<adapter>.weight` or `connector.modules_to_save.<adapter>.0.weight`
    and saves it as `….lora_A.weight` / `connector.0.weight`; client algorithms that act on
    gradients (SCAFFOLD) need the parameter of each saved key.
    """
    adapter = model.active_adapter
    params = {
        name.replace(f".{adapter}.", ".").replace(".modules_to_save.", "."): param
        for name, param in model.named_parameters()
        if _is_adapter_param(name)
    }
    _check_state_keys(model, params)
    return params


def trainable_groups(model: peft.PeftModel, groups: set[str]) -> None:
    """requires_grad=True exactly for the adapter parameters (LoRA, connector copy) of `groups`."""
    unknown = set(groups) - set(GROUPS.values())
    if unknown:
        raise ValueError(f"groups must be among {sorted(GROUPS.values())}, got {sorted(unknown)}")
    for name, param in model.named_parameters():
        param.requires_grad_(_is_adapter_param(name) and parameter_group(name) in groups)


def save_adapter(model: peft.PeftModel, out_dir: str | os.PathLike, state: dict[str, torch.Tensor] | None = None) -> None:
    """Write `adapter_config.json` + `adapter_model.safetensors` as `PeftModel.save_pretrained` names
    them, atomically and byte-deterministically (sorted JSON, fixed metadata, no model card).

    `state` (default: `adapter_state(model)`, same keys required) lets a server write aggregated
    tensors without first loading them into `model`.
    """
    tensors = adapter_state(model) if state is None else state
    _check_state_keys(model, tensors)
    # safetensors rejects aliased or non-contiguous tensors; copies are small (adapters only).
    tensors = {key: value.detach().to("cpu").contiguous().clone() for key, value in tensors.items()}
    config = model.peft_config[model.active_adapter].to_dict()
    config = {key: sorted(value) if isinstance(value, set) else value for key, value in config.items()}
    config["inference_mode"] = True
    base = unwrap(model)
    config["auto_mapping"] = {"base_model_class": type(base).__name__, "parent_library": type(base).__module__}
    with _atomic_dir(out_dir) as tmp:
        _write_json(tmp / ADAPTER_CONFIG_FILE, config)
        save_file(tensors, str(tmp / ADAPTER_WEIGHTS_FILE), metadata=SAFETENSORS_METADATA)
