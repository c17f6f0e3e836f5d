"""Full fine-tuning as a dense delta (``tuning.mode: full``).

FedUMM (Tables 3 and 4) and FedVLMBench compare adapters against full fine-tuning: every weight of
the language model and the connector trains, and a client uploads all of them. Here that is a
dense delta Δ = w − w_base per parameter, stored like an adapter: an adapter directory whose
``adapter_config.json`` holds ``{"fedumm_dense_delta": {"groups": [...]}}`` and whose
``adapter_model.safetensors`` holds Δ under the base model's parameter names
(``connector.0.weight``, ``language_model.model.layers.0.mlp.up_proj.weight``, ...). The server
averages these deltas exactly as it averages LoRA tensors (FedAvg of Δ_k is the delta of FedAvg of
w_k, since every client shares w_base), its norm checks see the update's size rather than the
weights', and round 0 is Δ = 0: the base model itself.

`DenseDelta` wraps the base model with the interface the training and evaluation code uses of a
``PeftModel`` (``get_base_model``, ``forward``, ``generate``, ``merge_and_unload``); the base weights
of the trained groups are kept on the CPU to form Δ and to switch between deltas.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

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
from fedumm.models.groups import parameter_group

DENSE_CONFIG_KEY = "fedumm_dense_delta"
"""The key of ``adapter_config.json`` that marks a dense delta (a PEFT adapter config has none)."""

FULL_GROUPS: tuple[str, ...] = ("connector", "language")
"""What full fine-tuning trains: every weight of the connector and the language model."""


def is_dense(adapter_dir: str | os.PathLike) -> bool:
    """Whether an adapter directory holds a dense delta rather than a PEFT adapter."""
    return DENSE_CONFIG_KEY in json.loads((Path(adapter_dir) / ADAPTER_CONFIG).read_text(encoding="utf-8"))


class DenseDelta(nn.Module):
    """The base model with every parameter of ``groups`` trainable, read and written as Δ = w − w_base."""

    def __init__(self, model: nn.Module, groups: tuple[str, ...] | list[str]) -> None:
        super().__init__()
        self.model = model
        self.groups = tuple(sorted(groups))
        self.active_adapter = "default"
        self.delta_parameters = {name: param for name, param in model.named_parameters()
                                 if parameter_group(name) in self.groups}
        if not self.delta_parameters:
            raise ValueError(f"full fine-tuning: the model has no parameter in groups {list(self.groups)}")
        self._base = {name: param.detach().to("cpu", copy=True) for name, param in self.delta_parameters.items()}

    def get_base_model(self) -> nn.Module:
        return self.model

    def forward(self, *args, **kwargs):
        return self.model(*args, **kwargs)

    def generate(self, *args, **kwargs):
        return self.model.generate(*args, **kwargs)

    def merge_and_unload(self) -> nn.Module:
        """The base model, which already holds w_base + Δ."""
        return self.model

    def delta_state(self) -> dict[str, torch.Tensor]:
        """Δ = w − w_base of every trained parameter, on the CPU, keyed by parameter name."""
        return {name: param.detach().to("cpu") - self._base[name] for name, param in self.delta_parameters.items()}

    def set_delta(self, state: dict[str, torch.Tensor]) -> None:
        """w = w_base + Δ; the keys must be exactly the trained parameters."""
        check_keys("dense delta", state, set(self.delta_parameters))
        with torch.no_grad():
            for name, param in self.delta_parameters.items():
                param.copy_((self._base[name] + state[name].to(self._base[name].dtype)).to(param.device))


def load(base_model: nn.Module, adapter_dir: str | os.PathLike) -> DenseDelta:
    """The base model with the dense delta of ``adapter_dir`` applied."""
    config = json.loads((Path(adapter_dir) / ADAPTER_CONFIG).read_text(encoding="utf-8"))[DENSE_CONFIG_KEY]
    model = DenseDelta(base_model, config["groups"])
    model.set_delta(read_weights(Path(adapter_dir) / ADAPTER_WEIGHTS))
    return model


def save(model: DenseDelta, out_dir: str | os.PathLike, state: dict[str, torch.Tensor] | None = None) -> None:
    """Write the delta (default: the model's own) as an adapter directory, atomically and
    byte-deterministically (sorted JSON, fixed safetensors metadata)."""
    tensors = model.delta_state() if state is None else state
    check_keys("dense delta", tensors, set(model.delta_parameters))
    tensors = {key: value.detach().to("cpu").contiguous().clone() for key, value in tensors.items()}
    with atomic_dir(out_dir) as tmp:
        atomic_write_json(tmp / ADAPTER_CONFIG, {DENSE_CONFIG_KEY: {"groups": list(model.groups)},
                                                 "base_model_class": type(model.model).__name__})
        save_file(tensors, str(tmp / ADAPTER_WEIGHTS), metadata=SAFETENSORS_METADATA)
