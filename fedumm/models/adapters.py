"""PEFT adapters on the base model: LoRA config, attaching, loading, saving, parameter groups.

An adapter directory (`save_adapter` / `load_adapter`) holds the files of `PeftModel.save_pretrained`
(`adapter_config.json`, `adapter_model.safetensors`; names in `fedumm.artifacts`), written
byte-deterministically, so that `PeftModel.from_pretrained(base, path)` loads LoRA weights and the
connector.

PEFT usage: `PeftModel` forwards `peft_model(**batch)` to `VisionLanguageModel.forward`; for
generation call `unwrap(peft_model).generate(...)` (LoRA layers and the trained connector copy
stay active inside the unwrapped model).
"""

from __future__ import annotations

import os
import re
from pathlib import Path

import peft
import torch
from safetensors.torch import save_file
from torch import nn

from fedumm.artifacts import (
    ADAPTER_CONFIG,
    ADAPTER_WEIGHTS,
    SAFETENSORS_METADATA,
    check_keys,
    read_weights,
)
from fedumm.io import atomic_dir, atomic_write_json
from fedumm.models import dense
from fedumm.models.groups import GROUPS, parameter_group
from fedumm.models.vlm import VisionLanguageModel, seeded


def _module_regex(prefix: str, names: list[str]) -> str:
    return rf"{re.escape(prefix)}\..*\.(?:{'|'.join(re.escape(name) for name in names)})"


def adapter_config(lora: dict, connector_trainable: bool) -> peft.LoraConfig:
    """LoRA on `lora["target_modules"]` inside the language model and `lora["vision_target_modules"]`
    inside the vision tower (one full-match regex over module names), plus full trained copies
    (peft's `modules_to_save`) of the connector when `connector_trainable` and of every module whose
    own name is in `lora["modules_to_save"]` (e.g. the language model's `lm_head`).
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
        modules_to_save=(["connector"] if connector_trainable else []) + list(lora.get("modules_to_save", [])) or None,
        bias="none",
    )


def attach_adapter(model: nn.Module, config: peft.LoraConfig, seed: int) -> peft.PeftModel:
    """Wrap `model` in a `PeftModel`; LoRA A matrices are drawn under `seed` (B starts at zero)."""
    with seeded(seed):
        return peft.get_peft_model(model, config)


AdaptedModel = peft.PeftModel | dense.DenseDelta
"""The base model with its adapter: LoRA (and trained copies) through PEFT, or full fine-tuning's
dense delta (`fedumm.models.dense`)."""


def load_adapter(base_model: nn.Module, adapter_dir: str | os.PathLike, is_trainable: bool) -> AdaptedModel:
    """Load an adapter directory onto `base_model` (the artifact contract: plain `PeftModel.from_pretrained`;
    a dense delta of full fine-tuning through `fedumm.models.dense.load`)."""
    if dense.is_dense(adapter_dir):
        return dense.load(base_model, adapter_dir)
    return peft.PeftModel.from_pretrained(base_model, str(adapter_dir), is_trainable=is_trainable)


def switch_adapter(model: AdaptedModel, name: str, adapter_dir: str | os.PathLike) -> None:
    """Make the adapter of ``adapter_dir`` the active one of ``model`` (one base model serves every
    adapter in turn): PEFT loads it under ``name`` beside the others, a dense delta replaces the last."""
    if isinstance(model, dense.DenseDelta):
        model.set_delta(read_weights(Path(adapter_dir) / ADAPTER_WEIGHTS))
        return
    model.load_adapter(str(adapter_dir), adapter_name=name, is_trainable=False)
    model.set_adapter(name)


def adapter_state(model: AdaptedModel) -> dict[str, torch.Tensor]:
    """The adapter tensors exactly as they go into adapter_model.safetensors."""
    if isinstance(model, dense.DenseDelta):
        return model.delta_state()
    return peft.get_peft_model_state_dict(model)


def _check_state_keys(model: peft.PeftModel, state: dict[str, torch.Tensor]) -> None:
    check_keys("adapter state", state, set(adapter_state(model)))


def set_adapter_state(model: AdaptedModel, state: dict[str, torch.Tensor]) -> None:
    """Load `adapter_state`-style tensors into `model`; the keys must be exactly the adapter's keys."""
    if isinstance(model, dense.DenseDelta):
        model.set_delta(state)
        return
    _check_state_keys(model, state)
    peft.set_peft_model_state_dict(model, state)


def _is_adapter_param(name: str) -> bool:
    # peft names LoRA tensors `lora_*` and the trained copy of a modules_to_save module `modules_to_save.<adapter>`.
    return ".lora_" in name or ".modules_to_save." in name


def adapter_parameters(model: AdaptedModel) -> dict[str, nn.Parameter]:
    """The parameters behind `adapter_state`, under its keys (without peft's adapter name).

    peft names a parameter `….lora_A.<adapter>.weight` or `connector.modules_to_save.<adapter>.0.weight`
    and saves it as `….lora_A.weight` / `connector.0.weight`; client algorithms that act on
    gradients (SCAFFOLD) need the parameter of each saved key. A dense delta's keys are the
    parameters' own names.
    """
    if isinstance(model, dense.DenseDelta):
        return dict(model.delta_parameters)
    adapter = model.active_adapter
    params = {
        name.replace(f".{adapter}.", ".").replace(".modules_to_save.", "."): param
        for name, param in model.named_parameters()
        if _is_adapter_param(name)
    }
    _check_state_keys(model, params)
    return params


def trainable_groups(model: AdaptedModel, groups: set[str]) -> None:
    """requires_grad=True exactly for the adapter parameters (LoRA, connector copy; a dense delta's
    parameters) of `groups`."""
    unknown = set(groups) - set(GROUPS)
    if unknown:
        raise ValueError(f"groups must be among {sorted(GROUPS)}, got {sorted(unknown)}")
    if isinstance(model, dense.DenseDelta):
        for name, param in model.model.named_parameters():
            param.requires_grad_(name in model.delta_parameters and parameter_group(name) in groups)
        return
    for name, param in model.named_parameters():
        param.requires_grad_(_is_adapter_param(name) and parameter_group(name) in groups)


def save_adapter(model: AdaptedModel, out_dir: str | os.PathLike, state: dict[str, torch.Tensor] | None = None) -> None:
    """Write `adapter_config.json` + `adapter_model.safetensors` as `PeftModel.save_pretrained` names
    them, atomically and byte-deterministically (sorted JSON, fixed metadata, no model card); a dense
    delta as `fedumm.models.dense.save` writes it.

    `state` (default: `adapter_state(model)`, same keys required) lets a server write aggregated
    tensors without first loading them into `model`.
    """
    if isinstance(model, dense.DenseDelta):
        dense.save(model, out_dir, state)
        return
    tensors = adapter_state(model) if state is None else state
    _check_state_keys(model, tensors)
    # safetensors rejects aliased or non-contiguous tensors; copies are small (adapters only).
    tensors = {key: value.detach().to("cpu").contiguous().clone() for key, value in tensors.items()}
    config = model.peft_config[model.active_adapter].to_dict()
    config = {key: sorted(value) if isinstance(value, set) else value for key, value in config.items()}
    config["inference_mode"] = True
    base = model.get_base_model()
    if isinstance(base, VisionLanguageModel):
        # A class outside transformers: record it, as peft does for custom models.
        config["auto_mapping"] = {"base_model_class": type(base).__name__, "parent_library": type(base).__module__}
    with atomic_dir(out_dir) as tmp:
        atomic_write_json(tmp / ADAPTER_CONFIG, config)
        save_file(tensors, str(tmp / ADAPTER_WEIGHTS), metadata=SAFETENSORS_METADATA)
